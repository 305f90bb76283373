"""What an operator sees of a running gateway: metrics, GC pauses, health, the event-loop watchdog, logs."""

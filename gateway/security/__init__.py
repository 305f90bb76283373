"""Who may call and how much: identity from the client certificate, admission, bounds, privacy, audit, certificates."""

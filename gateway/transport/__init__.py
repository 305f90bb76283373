"""gRPC in and out: the server, the services (translation only), proto ↔ core translation, refusals on the wire."""

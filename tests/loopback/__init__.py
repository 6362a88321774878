"""Real servers on 127.0.0.1 (and local PostgreSQL) that the network tests talk to."""

"""Templates, the outbox, transports, sender identities and suppression."""

"""Operations: scheduler leases, health checks, metrics, logging, configuration doctor."""

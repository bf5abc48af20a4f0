"""The dialer core: domain, scheduler, storage, daemon."""

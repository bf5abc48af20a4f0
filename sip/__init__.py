"""Everything that imports pjsua2: the SIP worker processes and the simulated phones."""

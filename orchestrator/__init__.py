"""lance-autoresearch: the daemon and command line that drive the autoresearch loop."""

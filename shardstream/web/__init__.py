"""The Twisted shell toward the clients: the twisted.web site and request,
the responses of the three route modes (scatter, relay, find) that feed the
core and carry out what it decides, and the rendering of errors."""

"""The sans-IO core: every decision about a request, as plain objects fed
bytes, items and events and returning bytes, items and actions. No reactor,
no Deferreds, no Twisted import (a test checks), so it is unit-tested
directly and fast."""

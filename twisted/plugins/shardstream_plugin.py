"""twistd plugin: ``twistd shardstream``. Imports stay lazy so that listing
twistd's plugins does not pay for loading the gateway."""

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IServiceMaker, IPlugin)
class _ShardstreamMaker:
    tapname = "shardstream"
    description = "Shard streaming gateway"

    @property
    def options(self):
        from shardstream.daemon.cli import Options

        return Options

    def makeService(self, options):
        from shardstream.daemon.cli import make_service

        return make_service(options)


serviceMaker = _ShardstreamMaker()

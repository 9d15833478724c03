from setuptools import Extension, find_packages, setup

setup(
    name="shardstream",
    version="0.1.0",
    description="Streaming API gateway for sharded REST applications (Twisted)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # twisted/plugins has no __init__.py (it must not shadow Twisted's), so it
    # is named explicitly to get the plugin into the wheel.
    packages=find_packages(include=["shardstream", "shardstream.*"]) + ["twisted.plugins"],
    package_data={"twisted.plugins": ["shardstream_plugin.py"], "shardstream": ["py.typed"]},
    install_requires=[
        "twisted>=26.10",  # request-smuggling fixes (README: Header hygiene)
        "ijson>=3.3",
        "txaio>=23.1",
        "service-identity>=24.1",
        "pyopenssl>=24.0",
        "orjson>=3.10",  # exact, fast encoding of parsed items (orjson.Fragment)
        "msgspec>=0.18",  # reads one field (a sort key, an owner) of an item's bytes
        "httptools>=0.6",  # llhttp: the lean client of the shards' GETs (upstream/lean.py)
        "cachetools>=5.3",  # the find-mode owner cache (TTL + size bound)
        "prometheus_client>=0.20",  # /metrics; multiprocess mode across workers
        "tomli_w>=1.0",  # shardstream-keys writes the keys file
        "txredisapi>=1.4.10",  # rate limits shared through Redis (Twisted-native)
    ],
    extras_require={
        # treq is the tests' HTTP client; the gateway itself uses twisted.web's Agent
        # directly (see shardstream/upstream/client.py for why). mypy checks the
        # types (tests/test_layout.py), strictly in the core.
        "test": ["pytest>=8", "hypothesis>=6.100", "treq>=24.9", "mypy>=1.10",
                 "mypy-zope>=1.0", "pyyaml>=6.0",
                 "trustme>=1.1", "openapi-spec-validator>=0.7", "schemathesis>=4.0"],
    },
    # The native item splitter (shardstream/core/split.py). optional=True: a
    # machine without a compiler still installs; the gateway then keeps ItemParser.
    ext_modules=[Extension("shardstream.core._splitter", ["shardstream/core/_splitter.c"],
                           optional=True)],
    entry_points={"console_scripts": ["shardstream-keys = shardstream.daemon.keys_cli:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
    ],
)

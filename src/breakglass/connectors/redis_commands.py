"""The Redis 7.0 command table, as ``COMMAND`` reports it on Redis 7.0.15.

Every command and subcommand (``family|sub``) under the ACL categories it belongs to
(without the ``@``), grouped by the exact set of categories. Offline catalog checks
(``lint``, ``serve``) reason over this table; at grant time the broker asks the live
server instead (:mod:`breakglass.connectors.redis_acl`), so a server that differs is
still checked. ``tests/integration/test_redis_breach.py`` compares it with the server.
"""

from __future__ import annotations

from types import MappingProxyType

# fmt: off
_BY_CATEGORIES = {
    "admin connection dangerous slow": (
        "client|kill client|list client|no-evict client|pause client|unblock "
        "client|unpause"
    ),
    "admin dangerous fast": "lastsave role",
    "admin dangerous hyperloglog slow": "pfselftest",
    "admin dangerous hyperloglog slow write": "pfdebug",
    "admin dangerous slow": (
        "acl|deluser acl|dryrun acl|getuser acl|list acl|load acl|log acl|save "
        "acl|setuser acl|users bgrewriteaof bgsave cluster|addslots cluster|addslotsrange "
        "cluster|bumpepoch cluster|count-failure-reports cluster|delslots "
        "cluster|delslotsrange cluster|failover cluster|flushslots cluster|forget "
        "cluster|meet cluster|replicas cluster|replicate cluster|reset cluster|saveconfig "
        "cluster|set-config-epoch cluster|setslot cluster|slaves config|get "
        "config|resetstat config|rewrite config|set debug failover latency|doctor "
        "latency|graph latency|histogram latency|history latency|latest latency|reset "
        "module|list module|load module|loadex module|unload monitor psync replconf "
        "replicaof save shutdown slaveof slowlog|get slowlog|len slowlog|reset sync"
    ),
    "bitmap fast read": "bitfield_ro getbit",
    "bitmap read slow": "bitcount bitpos",
    "bitmap slow write": "bitfield bitop setbit",
    "blocking fast sortedset write": "bzpopmax bzpopmin",
    "blocking list slow write": "blmove blmpop blpop brpop brpoplpush",
    "blocking read slow stream": "xread",
    "blocking slow sortedset write": "bzmpop",
    "blocking slow stream write": "xreadgroup",
    "connection fast": "asking auth echo hello ping quit readonly readwrite reset select",
    "connection slow": (
        "client|caching client|getname client|getredir client|help client|id client|info "
        "client|reply client|setname client|tracking client|trackinginfo command|count "
        "command|docs command|getkeys command|getkeysandflags command|help command|info "
        "command|list wait"
    ),
    "dangerous fast keyspace write": "swapdb",
    "dangerous keyspace read slow": "keys",
    "dangerous keyspace slow write": "flushall flushdb migrate restore restore-asking",
    "dangerous list read set slow sortedset": "sort_ro",
    "dangerous list set slow sortedset write": "sort",
    "dangerous slow": "info",
    "fast": "time",
    "fast hash read": "hexists hget hlen hmget hstrlen",
    "fast hash write": "hdel hincrby hincrbyfloat hmset hset hsetnx",
    "fast hyperloglog write": "pfadd",
    "fast keyspace read": "dbsize exists expiretime pexpiretime pttl touch ttl type",
    "fast keyspace write": "expire expireat move persist pexpire pexpireat renamenx unlink",
    "fast list read": "llen",
    "fast list write": "lpop lpush lpushx rpop rpush rpushx",
    "fast pubsub": "publish spublish",
    "fast read": "lolwut",
    "fast read set": "scard sismember smismember",
    "fast read sortedset": "zcard zcount zlexcount zmscore zrank zrevrank zscore",
    "fast read stream": "xlen",
    "fast read string": "get mget strlen",
    "fast set write": "sadd smove spop srem",
    "fast sortedset write": "zadd zincrby zpopmax zpopmin zrem",
    "fast stream write": "xack xadd xautoclaim xclaim xdel xsetid",
    "fast string write": "append decr decrby getdel getex getset incr incrby incrbyfloat setnx",
    "fast transaction": "discard multi unwatch watch",
    "geo read slow": "geodist geohash geopos georadius_ro georadiusbymember_ro geosearch",
    "geo slow write": "geoadd georadius georadiusbymember geosearchstore",
    "hash read slow": "hgetall hkeys hrandfield hscan hvals",
    "hyperloglog read slow": "pfcount",
    "hyperloglog slow write": "pfmerge",
    "keyspace read slow": (
        "dump object|encoding object|freq object|idletime object|refcount randomkey scan"
    ),
    "keyspace slow": "object|help",
    "keyspace slow write": "copy del rename",
    "list read slow": "lindex lpos lrange",
    "list slow write": "linsert lmove lmpop lrem lset ltrim rpoplpush",
    "pubsub slow": (
        "psubscribe pubsub|channels pubsub|numpat pubsub|numsub pubsub|shardchannels "
        "pubsub|shardnumsub punsubscribe ssubscribe subscribe sunsubscribe unsubscribe"
    ),
    "read set slow": "sdiff sinter sintercard smembers srandmember sscan sunion",
    "read slow": "memory|usage",
    "read slow sortedset": (
        "zdiff zinter zintercard zrandmember zrange zrangebylex zrangebyscore zrevrange "
        "zrevrangebylex zrevrangebyscore zscan zunion"
    ),
    "read slow stream": "xinfo|consumers xinfo|groups xinfo|stream xpending xrange xrevrange",
    "read slow string": "getrange lcs substr",
    "scripting slow": (
        "eval eval_ro evalsha evalsha_ro fcall fcall_ro function|dump function|help "
        "function|kill function|list function|stats script|debug script|exists "
        "script|flush script|help script|kill script|load"
    ),
    "scripting slow write": "function|delete function|flush function|load function|restore",
    "set slow write": "sdiffstore sinterstore sunionstore",
    "slow": (
        "acl|cat acl|genpass acl|help acl|whoami cluster|countkeysinslot "
        "cluster|getkeysinslot cluster|help cluster|info cluster|keyslot cluster|links "
        "cluster|myid cluster|nodes cluster|shards cluster|slots config|help latency|help "
        "memory|doctor memory|help memory|malloc-stats memory|purge memory|stats "
        "module|help pubsub|help slowlog|help"
    ),
    "slow sortedset write": (
        "zdiffstore zinterstore zmpop zrangestore zremrangebylex zremrangebyrank "
        "zremrangebyscore zunionstore"
    ),
    "slow stream": "xgroup|help xinfo|help",
    "slow stream write": (
        "xgroup|create xgroup|createconsumer xgroup|delconsumer xgroup|destroy "
        "xgroup|setid xtrim"
    ),
    "slow string write": "mset msetnx psetex set setex setrange",
    "slow transaction": "exec",
}
# fmt: on

COMMAND_TABLE = MappingProxyType({
    name: frozenset(categories.split())
    for categories, names in _BY_CATEGORIES.items()
    for name in names.split()
})
"""Command or ``family|sub`` name -> its ACL categories (no ``@``)."""

CATEGORIES = frozenset(c for cats in COMMAND_TABLE.values() for c in cats)
"""Every ACL category of this table (Redis also knows ``all``)."""

FAMILIES = frozenset(name.split("|")[0] for name in COMMAND_TABLE)
"""Every top-level command name."""

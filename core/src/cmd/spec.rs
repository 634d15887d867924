//! The shape of a command table entry (Redis 7's command metadata, plus the proxy policy).

/// Command flags, as `COMMAND INFO` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommandFlags(pub u32);

impl CommandFlags {
    pub const WRITE: CommandFlags = CommandFlags(1 << 0);
    pub const READONLY: CommandFlags = CommandFlags(1 << 1);
    pub const DENYOOM: CommandFlags = CommandFlags(1 << 2);
    pub const ADMIN: CommandFlags = CommandFlags(1 << 3);
    pub const PUBSUB: CommandFlags = CommandFlags(1 << 4);
    pub const NOSCRIPT: CommandFlags = CommandFlags(1 << 5);
    pub const BLOCKING: CommandFlags = CommandFlags(1 << 6);
    pub const LOADING: CommandFlags = CommandFlags(1 << 7);
    pub const STALE: CommandFlags = CommandFlags(1 << 8);
    pub const SKIP_MONITOR: CommandFlags = CommandFlags(1 << 9);
    pub const SKIP_SLOWLOG: CommandFlags = CommandFlags(1 << 10);
    pub const ASKING: CommandFlags = CommandFlags(1 << 11);
    pub const FAST: CommandFlags = CommandFlags(1 << 12);
    pub const NO_AUTH: CommandFlags = CommandFlags(1 << 13);
    pub const NO_MANDATORY_KEYS: CommandFlags = CommandFlags(1 << 14);
    pub const NO_MULTI: CommandFlags = CommandFlags(1 << 15);
    pub const MOVABLEKEYS: CommandFlags = CommandFlags(1 << 16);
    pub const ALLOW_BUSY: CommandFlags = CommandFlags(1 << 17);
    pub const NO_ASYNC_LOADING: CommandFlags = CommandFlags(1 << 18);

    /// The flag names in `COMMAND INFO`'s order and spelling.
    pub const NAMES: [(CommandFlags, &'static str); 19] = [
        (Self::WRITE, "write"),
        (Self::READONLY, "readonly"),
        (Self::DENYOOM, "denyoom"),
        (Self::ADMIN, "admin"),
        (Self::PUBSUB, "pubsub"),
        (Self::NOSCRIPT, "noscript"),
        (Self::BLOCKING, "blocking"),
        (Self::LOADING, "loading"),
        (Self::STALE, "stale"),
        (Self::SKIP_MONITOR, "skip_monitor"),
        (Self::SKIP_SLOWLOG, "skip_slowlog"),
        (Self::ASKING, "asking"),
        (Self::FAST, "fast"),
        (Self::NO_AUTH, "no_auth"),
        (Self::NO_MANDATORY_KEYS, "no_mandatory_keys"),
        (Self::NO_MULTI, "no_multi"),
        (Self::MOVABLEKEYS, "movablekeys"),
        (Self::ALLOW_BUSY, "allow_busy"),
        (Self::NO_ASYNC_LOADING, "no_async_loading"),
    ];

    /// Whether every bit of `other` is set.
    #[inline]
    pub const fn contains(self, other: CommandFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The names of the flags that are set.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Self::NAMES
            .into_iter()
            .filter(move |(f, _)| self.contains(*f))
            .map(|(_, n)| n)
    }
}

/// Key-spec flags (Redis 7): how a command uses the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyFlags(pub u16);

impl KeyFlags {
    pub const RO: KeyFlags = KeyFlags(1 << 0);
    pub const RW: KeyFlags = KeyFlags(1 << 1);
    pub const OW: KeyFlags = KeyFlags(1 << 2);
    pub const RM: KeyFlags = KeyFlags(1 << 3);
    pub const ACCESS: KeyFlags = KeyFlags(1 << 4);
    pub const UPDATE: KeyFlags = KeyFlags(1 << 5);
    pub const INSERT: KeyFlags = KeyFlags(1 << 6);
    pub const DELETE: KeyFlags = KeyFlags(1 << 7);
    /// Not a key (SPUBLISH's shard channel): hashed like a key but not stored.
    pub const NOT_KEY: KeyFlags = KeyFlags(1 << 8);
    /// The spec may miss keys; a special-case extractor finds them.
    pub const INCOMPLETE: KeyFlags = KeyFlags(1 << 9);
    pub const VARIABLE_FLAGS: KeyFlags = KeyFlags(1 << 10);

    /// Whether every bit of `other` is set.
    #[inline]
    pub const fn contains(self, other: KeyFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// Where the search for a spec's first key starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginSearch {
    /// At this argument index.
    Index(i16),
    /// After this keyword, searched from `start_from` (negative: from the end, backwards).
    Keyword {
        keyword: &'static str,
        start_from: i16,
    },
    /// Only a special-case extractor knows.
    Unknown,
}

/// How the keys continue from the first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindKeys {
    /// Up to `last_key` (relative to the first key; negative: from the end of the arguments,
    /// or with `limit` > 0, the remaining arguments divided by `limit`), every `key_step`.
    Range {
        last_key: i16,
        key_step: i16,
        limit: i16,
    },
    /// A count argument at `first + keynum_idx`, keys from `first + first_key`.
    KeyNum {
        keynum_idx: i16,
        first_key: i16,
        key_step: i16,
    },
    /// Only a special-case extractor knows.
    Unknown,
}

/// One key specification of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub flags: KeyFlags,
    pub begin: BeginSearch,
    pub find: FindKeys,
    /// Redis's explanatory note (empty for most specs).
    pub notes: &'static str,
}

/// How a split command's parts are merged by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    /// MGET: arrays concatenated back in request order.
    Mget,
    /// MSET: OK when every part is OK.
    Mset,
    /// DEL, UNLINK, EXISTS, TOUCH: integers summed.
    Sum,
}

/// What the proxy does with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyPolicy {
    /// Route by its (single) key to the slot's group.
    Forward,
    /// Split per backend group and merge the replies.
    Split(SplitKind),
    /// Allowed only when all keys hash to one slot (multi-key, scripts, blocking).
    SameSlot,
    /// Answered by the proxy itself.
    Local,
    /// Sent to every group, replies merged (SCAN, KEYS, DBSIZE, FLUSHALL, CONFIG, ...).
    Fanout,
    /// Pub/sub: the session gets its own backend connection(s).
    PubSub,
    /// MULTI/EXEC/DISCARD/WATCH/UNWATCH: pinned backend connection, slot fixed by first key.
    Transaction,
    /// Refused with `-ERR command 'x' is not allowed`.
    NotAllowed,
}

/// One command (or subcommand, named `parent|sub`).
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    /// Dense id, unique across commands and subcommands (`0..NUM_SPECS`): index arrays by it.
    pub id: u16,
    /// Lower-case name; subcommands are `container|sub` as in `COMMAND INFO`.
    pub name: &'static str,
    /// Redis convention: `N` exactly N arguments with the name, `-N` at least N.
    pub arity: i16,
    pub flags: CommandFlags,
    /// Legacy key positions (first, last, step) as `COMMAND INFO` reports them.
    pub first_key: i16,
    pub last_key: i16,
    pub key_step: i16,
    pub key_specs: &'static [KeySpec],
    pub subcommands: &'static [CommandSpec],
    pub proxy: ProxyPolicy,
    /// ACL categories (`@read`, `@string`, ...), as COMMAND INFO reports them.
    pub acl_categories: &'static [&'static str],
    /// Command tips (`nondeterministic_output`, `request_policy:all_shards`, ...).
    pub tips: &'static [&'static str],
}

impl CommandSpec {
    /// Whether `argc` arguments (the name included) satisfy the arity.
    #[inline]
    pub fn arity_ok(&self, argc: usize) -> bool {
        let a = self.arity as i64;
        (a >= 0 && argc as i64 == a) || (a < 0 && argc as i64 >= -a)
    }

    /// Whether the command has this flag.
    #[inline]
    pub fn has(&self, f: CommandFlags) -> bool {
        self.flags.contains(f)
    }

    /// Whether this is a container (CONFIG, CLIENT, ...) whose work is in subcommands.
    #[inline]
    pub fn is_container(&self) -> bool {
        !self.subcommands.is_empty()
    }

    /// Whether the command names keys at all.
    #[inline]
    pub fn has_keys(&self) -> bool {
        self.key_specs
            .iter()
            .any(|s| !s.flags.contains(KeyFlags::NOT_KEY))
    }

    /// The name in upper case, as Redis's error messages show it for subcommands.
    pub fn upper_name(&self) -> String {
        self.name.to_ascii_uppercase()
    }
}

package sticktable

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Defaults applied to zero Config fields; they match the contract's
// Caddyfile defaults so an empty `table name {}` block means the same here.
const (
	// DefaultSize is the entry cap: 1m, as HAProxy users write it.
	DefaultSize = 1 << 20
	// DefaultExpire is the idle lifetime.
	DefaultExpire = 30 * time.Minute
	// DefaultLen is the string and binary key length, HAProxy's default.
	DefaultLen = 32
	// MaxSize bounds Size so slot indices fit in uint32 with room to spare.
	MaxSize = 1 << 30
	// MaxLen bounds string and binary key lengths.
	MaxLen = 65535
	// MinRetention is the floor of the default tombstone retention, so a
	// table with a short Expire still keeps deletes long enough to reach
	// peers that are briefly unreachable.
	MinRetention = time.Minute
)

// Config is what a Caddyfile `table` block configures.
type Config struct {
	// Type is the key type; the zero value is KeyString.
	Type KeyType
	// Len is the maximum length in bytes of string and binary keys
	// (longer keys are truncated); 0 means DefaultLen. It must be 0 for
	// the other types, whose size is fixed.
	Len int
	// Size is the hard cap on entries (tombstones included); 0 means
	// DefaultSize.
	Size int
	// Expire is the idle lifetime, refreshed by Match and Store; 0 means
	// DefaultExpire.
	Expire time.Duration
	// NoPurge refuses new keys when the table is full instead of evicting
	// the least recently used entries; existing keys still update.
	NoPurge bool
	// Retention is how long deletion tombstones are kept so deletes can
	// replicate; 0 means max(2*Expire, MinRetention), following Expire
	// across Reconfigure.
	Retention time.Duration
}

func (c Config) normalize() (Config, error) {
	if !c.Type.valid() {
		return c, fmt.Errorf("sticktable: unknown key type %d", c.Type)
	}
	switch {
	case c.Type.HasLen() && c.Len == 0:
		c.Len = DefaultLen
	case c.Type.HasLen() && (c.Len < 0 || c.Len > MaxLen):
		return c, fmt.Errorf("sticktable: len %d out of range 1..%d", c.Len, MaxLen)
	case !c.Type.HasLen() && c.Len != 0:
		return c, fmt.Errorf("sticktable: len applies only to string and binary keys, not %s", c.Type)
	}
	var err error
	if c.Size, c.Expire, err = checkSizeExpire(c.Size, c.Expire); err != nil {
		return c, err
	}
	if c.Retention < 0 {
		return c, fmt.Errorf("sticktable: negative retention %v", c.Retention)
	}
	return c, nil
}

func checkSizeExpire(size int, expire time.Duration) (int, time.Duration, error) {
	if size == 0 {
		size = DefaultSize
	}
	if size < 0 || size > MaxSize {
		return 0, 0, fmt.Errorf("sticktable: size %d out of range 1..%d", size, MaxSize)
	}
	if expire == 0 {
		expire = DefaultExpire
	}
	if expire < 0 {
		return 0, 0, fmt.Errorf("sticktable: negative expire %v", expire)
	}
	return size, expire, nil
}

func defaultRetention(expire time.Duration) time.Duration {
	return max(2*expire, MinRetention)
}

// granularity is how stale an entry's last refresh may be before a hit
// rewrites its expiry and LRU position; see the package documentation.
func granularity(expire time.Duration) time.Duration {
	return max(min(time.Second, expire/64), 1)
}

// ParseSize parses a table size as HAProxy writes it: a plain integer or
// one with a k or m suffix (binary multiples: 1k = 1024, 1m = 1048576).
func ParseSize(s string) (int, error) {
	mult := 1
	num := s
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult, num = 1<<10, s[:len(s)-1]
	case strings.HasSuffix(s, "m"), strings.HasSuffix(s, "M"):
		mult, num = 1<<20, s[:len(s)-1]
	}
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil || n == 0 || n > MaxSize/uint64(mult) {
		return 0, fmt.Errorf("sticktable: invalid size %q (want a positive integer, optionally with k or m, at most %d entries)", s, MaxSize)
	}
	return int(n) * mult, nil
}

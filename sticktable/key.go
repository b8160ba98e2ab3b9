package sticktable

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unsafe"
)

// KeyType says how key text is parsed, compared, stored and rendered.
type KeyType uint8

const (
	// KeyString keys are raw bytes truncated to the table's Len. It is the
	// zero value because the contract makes string the default type.
	KeyString KeyType = iota
	// KeyIP keys are IPv4 addresses; IPv4-mapped IPv6 text is accepted and
	// stored as the IPv4 address so both spellings reach the same entry.
	KeyIP
	// KeyIPv6 keys are any IP address, stored as 16 bytes (IPv4 as
	// IPv4-mapped IPv6), so one table serves dual-stack clients.
	KeyIPv6
	// KeyInteger keys are signed 64-bit decimal numbers.
	KeyInteger
	// KeyBinary keys are given as hex text and stored as the bytes it
	// encodes, truncated to the table's Len.
	KeyBinary
)

var keyTypeNames = [...]string{
	KeyString:  "string",
	KeyIP:      "ip",
	KeyIPv6:    "ipv6",
	KeyInteger: "integer",
	KeyBinary:  "binary",
}

// String returns the type's name as written in a Caddyfile.
func (t KeyType) String() string {
	if int(t) < len(keyTypeNames) {
		return keyTypeNames[t]
	}
	return "keytype(" + strconv.Itoa(int(t)) + ")"
}

// HasLen reports whether the type takes a length (string and binary keys),
// which configuration parsers need to accept or reject `len N`.
func (t KeyType) HasLen() bool { return t == KeyString || t == KeyBinary }

func (t KeyType) valid() bool { return t <= KeyBinary }

// fixedLen is the stored size of fixed-size key types, 0 for the others.
func (t KeyType) fixedLen() int {
	switch t {
	case KeyIP:
		return 4
	case KeyIPv6:
		return 16
	case KeyInteger:
		return 8
	}
	return 0
}

// ParseKeyType turns a Caddyfile type name into a KeyType.
func ParseKeyType(s string) (KeyType, error) {
	for i, n := range keyTypeNames {
		if s == n {
			return KeyType(i), nil
		}
	}
	return 0, fmt.Errorf("sticktable: unknown key type %q (want ip, ipv6, string, integer or binary)", s)
}

// Errors returned by the table. Callers compare with errors.Is, since most
// are wrapped with detail about the offending value.
var (
	// ErrEmptyKey is returned for an empty key: a request without the key
	// (no cookie, no header) must neither match nor store.
	ErrEmptyKey = errors.New("sticktable: empty key")
	// ErrInvalidKey is returned for key text that does not parse as the
	// table's type; it is never coerced into some other key.
	ErrInvalidKey = errors.New("sticktable: invalid key")
	// ErrKeyType is returned when a Key, change or snapshot of one key type
	// is given to a table of another.
	ErrKeyType = errors.New("sticktable: key type mismatch")
	// ErrFull is returned by a NoPurge table asked to add a key while full.
	ErrFull = errors.New("sticktable: table full")
	// ErrEmptyServer is returned when storing an empty server name, which
	// would be indistinguishable from a deletion.
	ErrEmptyServer = errors.New("sticktable: empty server")
	// ErrServerTooLong is returned for a server identity longer than
	// MaxServerLen bytes: identities are dial addresses or short names, and
	// every one is kept in memory, replicated and persisted.
	ErrServerTooLong = fmt.Errorf("sticktable: server identity longer than %d bytes", MaxServerLen)
	// ErrTooManyServers is returned when a shard already references 65535
	// distinct server (or node) names; server identities are interned into
	// 16-bit indices to keep entries small.
	ErrTooManyServers = errors.New("sticktable: too many distinct servers")
	// ErrCorrupt is returned when a snapshot fails its checks.
	ErrCorrupt = errors.New("sticktable: corrupt snapshot")
)

// Key is a parsed key: a value of a table's key type in its stored form.
// Keys are comparable with ==, so they can be map keys of their own, and
// parsing once lets a caller match and store without parsing twice.
type Key struct {
	fix [16]byte // ip: 4 bytes, ipv6: 16, integer: 8 (big-endian two's complement)
	str string   // string and binary keys
	typ KeyType
}

// Type returns the key's type.
func (k Key) Type() KeyType { return k.typ }

// IsZero reports whether k is the zero Key, which no parse ever returns.
func (k Key) IsZero() bool { return k == Key{} }

// String renders the key in canonical text, which parses back to the same
// key: IP addresses in standard form, integers in decimal, binary keys in
// lowercase hex, string keys as they are.
func (k Key) String() string {
	if k.IsZero() {
		return ""
	}
	switch k.typ {
	case KeyIP:
		return netip.AddrFrom4([4]byte(k.fix[:4])).String()
	case KeyIPv6:
		return netip.AddrFrom16(k.fix).String()
	case KeyInteger:
		return strconv.FormatInt(int64(binary.BigEndian.Uint64(k.fix[:8])), 10)
	case KeyBinary:
		const digits = "0123456789abcdef"
		var b strings.Builder
		b.Grow(2 * len(k.str))
		for i := 0; i < len(k.str); i++ {
			b.WriteByte(digits[k.str[i]>>4])
			b.WriteByte(digits[k.str[i]&15])
		}
		return b.String()
	}
	return k.str
}

// AppendBytes appends the key's stored bytes (4 for ip, 16 for ipv6, 8
// big-endian for integer, the raw bytes otherwise): the compact form for
// snapshots and wire formats, read back by Table.KeyFromBytes.
func (k Key) AppendBytes(dst []byte) []byte {
	if n := k.typ.fixedLen(); n > 0 {
		return append(dst, k.fix[:n]...)
	}
	return append(dst, k.str...)
}

// Compare orders keys of one type the way the admin API pages through
// them: IP addresses and integers numerically, strings and binary keys
// bytewise. Keys of different types order by type.
func (k Key) Compare(o Key) int {
	if k.typ != o.typ {
		if k.typ < o.typ {
			return -1
		}
		return 1
	}
	switch k.typ {
	case KeyInteger:
		a, b := int64(binary.BigEndian.Uint64(k.fix[:8])), int64(binary.BigEndian.Uint64(o.fix[:8]))
		switch {
		case a < b:
			return -1
		case a > b:
			return 1
		}
		return 0
	case KeyIP, KeyIPv6:
		return bytes.Compare(k.fix[:], o.fix[:])
	}
	return strings.Compare(k.str, o.str)
}

// ParseKey parses key text as the given type, truncating string and binary
// keys to maxLen bytes (0 means the default, 32). Tables do this for every
// text key; it is exported for configuration checks and tools.
func ParseKey(typ KeyType, maxLen int, text string) (Key, error) {
	if !typ.valid() {
		return Key{}, fmt.Errorf("%w: unknown key type %d", ErrKeyType, typ)
	}
	if maxLen <= 0 {
		maxLen = DefaultLen
	}
	return parseKey(typ, maxLen, text)
}

// parseKey is the allocation-free (for ip, ipv6, integer and string keys)
// parser behind every text entry point.
func parseKey(typ KeyType, maxLen int, text string) (Key, error) {
	if text == "" {
		return Key{}, ErrEmptyKey
	}
	k := Key{typ: typ}
	switch typ {
	case KeyString:
		if len(text) > maxLen {
			text = text[:maxLen]
		}
		k.str = text
	case KeyIP:
		a, ok := parseAddr(text)
		if a = a.Unmap(); !ok || !a.Is4() {
			return Key{}, invalidKey(typ, text)
		}
		b := a.As4()
		copy(k.fix[:4], b[:])
	case KeyIPv6:
		a, ok := parseAddr(text)
		if !ok {
			return Key{}, invalidKey(typ, text)
		}
		k.fix = a.As16()
	case KeyInteger:
		v, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			return Key{}, invalidKey(typ, text)
		}
		binary.BigEndian.PutUint64(k.fix[:8], uint64(v))
	case KeyBinary:
		if len(text)%2 != 0 {
			return Key{}, invalidKey(typ, text)
		}
		for i := 0; i < len(text); i++ {
			if unhex(text[i]) > 15 {
				return Key{}, invalidKey(typ, text)
			}
		}
		n := min(len(text)/2, maxLen)
		b := make([]byte, n)
		for i := range b {
			b[i] = unhex(text[2*i])<<4 | unhex(text[2*i+1])
		}
		// b is fresh and never written again, so sharing it saves a copy.
		k.str = unsafe.String(&b[0], n)
	default:
		return Key{}, fmt.Errorf("%w: unknown key type %d", ErrKeyType, typ)
	}
	return k, nil
}

// keyFromBytes builds a key from its stored bytes (Key.AppendBytes).
func keyFromBytes(typ KeyType, maxLen int, raw []byte) (Key, error) {
	if len(raw) == 0 {
		return Key{}, ErrEmptyKey
	}
	k := Key{typ: typ}
	if n := typ.fixedLen(); n > 0 {
		if len(raw) != n {
			return Key{}, fmt.Errorf("%w: %s key of %d bytes, want %d", ErrInvalidKey, typ, len(raw), n)
		}
		copy(k.fix[:], raw)
		return k, nil
	}
	if !typ.valid() {
		return Key{}, fmt.Errorf("%w: unknown key type %d", ErrKeyType, typ)
	}
	if len(raw) > maxLen {
		raw = raw[:maxLen]
	}
	k.str = string(raw)
	return k, nil
}

func parseAddr(text string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(text)
	if err != nil || a.Zone() != "" {
		// A zone names a local interface, not a client: refuse it rather
		// than silently dropping it and merging clients.
		return netip.Addr{}, false
	}
	return a, true
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 255
}

func invalidKey(typ KeyType, text string) error {
	if len(text) > 64 {
		text = text[:64] + "..."
	}
	return fmt.Errorf("%w: %q is not a valid %s key", ErrInvalidKey, text, typ)
}

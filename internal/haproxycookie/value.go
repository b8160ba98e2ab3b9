package haproxycookie

import (
	"strings"
	"time"
)

// MaxValueLen is the largest cookie value this package looks at. Longer
// values are treated as absent: no legitimate persistence value comes close
// (a dated value is at most len(server)+12 bytes), and refusing them early
// bounds the work an attacker can cause.
const MaxValueLen = 4096

// DateDelim separates the server value from the dates (HAProxy's
// COOKIE_DELIM_DATE).
const DateDelim = '|'

// Parsed is a decoded insert-mode cookie value
// <server>[|<lastseen>[|<firstseen>]].
type Parsed struct {
	// Server is the server part, a substring of the parsed input. It is
	// never empty when Parse succeeds.
	Server string
	// LastSeen is the "last seen" date, the zero Time when absent. It is
	// the instant HAProxy (or we) last issued the cookie, rounded up to a
	// multiple of 4 seconds.
	LastSeen time.Time
	// FirstSeen is the "first seen" date, the zero Time when absent. It is
	// set when the cookie was first issued and carried over unchanged on
	// every refresh; only "maxlife" uses it.
	FirstSeen time.Time
}

// Parse decodes an insert-mode cookie value (not prefix mode: see
// SplitPrefix). It does not allocate; Server is a substring of raw.
//
// Accepted forms are exactly those HAProxy emits: "S", "S|LLLLL" and
// "S|LLLLL|FFFFF", where S is a non-empty run of RFC 6265 cookie-octets
// without '|' and each date is 5 base64 characters. A date that decodes to
// zero ("AAAAA") is reported as absent, as HAProxy does.
//
// Parse is stricter than HAProxy's request parser, which ignores dates it
// cannot decode, decodes only the first 5 characters of an overlong date and
// accepts empty date fields ("S|", "S||FFFFF"), routing on S in all those
// cases. HAProxy never produces such values, so only hand-made cookies are
// affected; here they count as absent, the request is load balanced and the
// client gets a fresh, well-formed cookie.
func Parse(raw string) (Parsed, bool) {
	if len(raw) == 0 || len(raw) > MaxValueLen {
		return Parsed{}, false
	}
	server, dates, dated := strings.Cut(raw, string(DateDelim))
	if !validServer(server) {
		return Parsed{}, false
	}
	p := Parsed{Server: server}
	if !dated {
		return p, true
	}
	var last, first uint32
	switch len(dates) {
	case DateLen:
		v, ok := decodeQuantum(dates)
		if !ok {
			return Parsed{}, false
		}
		last = v
	case 2*DateLen + 1:
		if dates[DateLen] != DateDelim {
			return Parsed{}, false
		}
		l, ok1 := decodeQuantum(dates[:DateLen])
		f, ok2 := decodeQuantum(dates[DateLen+1:])
		if !ok1 || !ok2 {
			return Parsed{}, false
		}
		last, first = l, f
	default:
		return Parsed{}, false
	}
	// HAProxy keeps a decoded date only when it is > 0.
	if last != 0 {
		p.LastSeen = time.Unix(int64(last)<<2, 0).UTC()
	}
	if first != 0 {
		p.FirstSeen = time.Unix(int64(first)<<2, 0).UTC()
	}
	return p, true
}

// validServer reports whether s is a non-empty run of RFC 6265
// cookie-octets (%x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E), which
// excludes spaces, quotes, commas, semicolons, backslashes, controls and
// non-ASCII bytes. An empty server part never matches in HAProxy either
// (it refuses empty values so clients cannot stick to cookie-less servers).
func validServer(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isCookieOctet(s[i]) {
			return false
		}
	}
	return true
}

func isCookieOctet(b byte) bool { return byteClasses[b]&classOctet != 0 }

// AppendValue appends an insert-mode cookie value to dst in HAProxy's exact
// format: server, then "|" + EncodeDate(last) when withLast, then
// "|" + EncodeDate(first) when withFirst.
//
// HAProxy always writes the last-seen date when it writes any date, so
// withFirst implies withLast: last is written even if withLast is false.
// server is written as is; it must not contain '|' or bytes that are invalid
// in a cookie value.
func AppendValue(dst []byte, server string, last, first time.Time, withLast, withFirst bool) []byte {
	dst = append(dst, server...)
	if withLast || withFirst {
		dst = append(dst, DateDelim)
		dst = AppendDate(dst, last)
	}
	if withFirst {
		dst = append(dst, DateDelim)
		dst = AppendDate(dst, first)
	}
	return dst
}

// AppendIssued appends the value HAProxy would put in a Set-Cookie for
// server at time now, for a backend configured with maxIdle/maxLife (0 means
// not configured):
//
//   - no dates when neither is configured;
//   - "|" + now when either is configured (the last-seen date is mandatory);
//   - "|" + first seen when maxLife is configured: prevFirst when non-zero,
//     otherwise now.
//
// prevFirst should be the FirstSeen of the cookie the client presented when
// Check did not reject it, and the zero Time otherwise. HAProxy carries the
// first-seen date over even when the cookie named an unknown or unavailable
// server and the client is being moved to another one; only an expired,
// too old or future-dated cookie loses it.
func AppendIssued(dst []byte, server string, now, prevFirst time.Time, maxIdle, maxLife time.Duration) []byte {
	first := prevFirst
	if first.IsZero() {
		first = now
	}
	return AppendValue(dst, server, now, first, maxIdle > 0 || maxLife > 0, maxLife > 0)
}

package haproxycookie

import "strings"

// This file scans and edits Cookie / Set-Cookie header values without
// going through net/http, which allocates a *Cookie per pair on every
// request. The request-side parsing follows net/http's readCookies (Go 1.26)
// exactly, so FindCookie(r.Header["Cookie"], n) agrees with r.Cookie(n) for
// values up to MaxValueLen, with two deliberate exceptions:
//
//   - net/http ignores all cookies of a request carrying more than 3000
//     (its httpcookiemaxnum limit, a defence against allocation blow-up);
//     FindCookie does not allocate and has no such limit;
//   - values longer than MaxValueLen are skipped.
//
// Where net/http and HAProxy disagree, net/http's rules are used:
//
//   - HAProxy also splits Cookie headers on ',' (RFC 2965 style), net/http
//     does not: "a=1, SRV=x" is one cookie "a" here;
//   - HAProxy does not strip double quotes around a value, net/http does;
//   - HAProxy skips spaces after '=' ("SRV = x"), net/http keeps them in the
//     value (the trimmed name still matches, so RemoveCookie removes it);
//   - HAProxy ties "$Path"-style RFC 2109 attributes to the preceding
//     cookie and removes them with it; here they are ordinary cookies.
//
// Browsers send none of these forms.

// isOWS reports whether b is trimmed around cookie pairs; this is the set
// net/textproto.TrimString uses.
func isOWS(b byte) bool {
	return b == ' ' || b == '\t' || b == '\n' || b == '\r'
}

func trimOWS(s string) string {
	for len(s) > 0 && isOWS(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isOWS(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

// isToken reports whether s is a non-empty RFC 7230 token, the rule
// net/http applies to cookie names.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTChar(s[i]) {
			return false
		}
	}
	return true
}

func isTChar(b byte) bool { return byteClasses[b]&classTChar != 0 }

// validCookieValueByte is net/http's rule for bytes inside a cookie value.
func validCookieValueByte(b byte) bool { return byteClasses[b]&classValue != 0 }

// Byte classes, looked up in one table: the hot path checks every byte of
// a cookie name and value, and a table costs one load per byte where the
// rules cost a chain of comparisons.
const (
	classTChar = 1 << iota // RFC 7230 token character
	classValue             // allowed in a cookie value by net/http
	classOctet             // RFC 6265 cookie-octet (a server value's bytes)
)

var byteClasses = func() (t [256]uint8) {
	for i := range t {
		b := byte(i)
		if 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0 {
			t[i] |= classTChar
		}
		if 0x20 <= b && b < 0x7f && b != '"' && b != ';' && b != '\\' {
			t[i] |= classValue
		}
		if b > 0x20 && b < 0x7f && b != '"' && b != ',' && b != ';' && b != '\\' {
			t[i] |= classOctet
		}
	}
	return t
}()

// pairName returns the trimmed name of a trimmed, non-empty cookie pair and
// its raw value (everything after the first '='; "" when there is no '=',
// which net/http reads as an empty value).
func pairName(part string) (name, rawValue string) {
	name, rawValue, _ = strings.Cut(part, "=")
	return trimOWS(name), rawValue
}

// cookieValue strips one pair of surrounding double quotes and validates
// the bytes, as net/http's parseCookieValue does for Cookie headers.
func cookieValue(raw string) (string, bool) {
	if len(raw) > 1 && raw[0] == '"' && raw[len(raw)-1] == '"' {
		raw = raw[1 : len(raw)-1]
	}
	for i := 0; i < len(raw); i++ {
		if !validCookieValueByte(raw[i]) {
			return "", false
		}
	}
	return raw, true
}

// FindCookie returns the value of the first cookie called name in the given
// Cookie header values (r.Header["Cookie"]). It does not allocate; value is a
// substring of one of the header values.
//
// Parsing follows net/http: pairs are separated by ';', surrounding spaces,
// tabs, CR and LF are trimmed, a pair without '=' is a cookie with an empty
// value, the name must match exactly (case-sensitive), one pair of
// surrounding double quotes is stripped, and a value containing a byte
// net/http rejects (controls, non-ASCII, '"', ';', '\') is skipped as if
// absent, as is a value longer than MaxValueLen. Scanning then continues,
// so a later well-formed occurrence can still be found. name must be a valid
// token; otherwise nothing is found.
func FindCookie(headerValues []string, name string) (value string, found bool) {
	v, p := ScanCookie(headerValues, name)
	return v, p == Present
}

// Presence says what a request carries under a cookie name.
type Presence uint8

const (
	// Absent: no cookie of that name.
	Absent Presence = iota
	// Present: a well-formed value (possibly empty, possibly quoted).
	Present
	// Unusable: only malformed (bytes net/http rejects) or oversized (over
	// MaxValueLen) values of that name.
	Unusable
)

// ScanCookie is FindCookie that also tells a request without the cookie
// from one whose only cookies of that name are malformed or oversized, in
// the same single pass and without allocating: value and the Present case
// are exactly what FindCookie returns.
func ScanCookie(headerValues []string, name string) (value string, p Presence) {
	if !isToken(name) {
		return "", Absent
	}
	for _, line := range headerValues {
		for len(line) > 0 {
			var raw string
			var named bool
			raw, line, named = nextPair(line, name)
			if !named {
				continue
			}
			v, ok := cookieValue(raw)
			if !ok || len(v) > MaxValueLen {
				p = Unusable
				continue
			}
			return v, Present
		}
	}
	return "", p
}

// FirstCookie returns the value of the first cookie called name, one pair
// of surrounding double quotes stripped, without checking its bytes or its
// length, and name must be a valid token. It is for callers that recognise
// the values they issued (well formed, at most MaxValueLen long): for such
// a value it is what ScanCookie returns, in less time. For any other value
// the caller must use ScanCookie, which skips a malformed or oversized
// first value and looks further.
func FirstCookie(headerValues []string, name string) (value string, found bool) {
	for _, line := range headerValues {
		for len(line) > 0 {
			var raw string
			var named bool
			raw, line, named = nextPair(line, name)
			if !named {
				continue
			}
			if len(raw) > 1 && raw[0] == '"' && raw[len(raw)-1] == '"' {
				raw = raw[1 : len(raw)-1]
			}
			return raw, true
		}
	}
	return "", false
}

// nextPair takes the next pair off a Cookie header value and reports
// whether it is called name (a token), with its raw value (everything
// after the first '=', "" when there is none, which net/http reads as an
// empty value). The pair's name is what precedes '=', trimmed (pairName):
// it is name when the trimmed pair starts with name followed by optional
// spaces and '=', or by nothing. A token holds neither spaces nor '=', so
// this is the same test without cutting the pair.
func nextPair(line, name string) (raw, rest string, named bool) {
	part := line
	if end := strings.IndexByte(line, ';'); end >= 0 {
		part, rest = line[:end], line[end+1:]
	}
	part = trimOWS(part)
	if len(part) < len(name) || part[:len(name)] != name {
		return "", rest, false
	}
	after := part[len(name):]
	j := 0
	for j < len(after) && isOWS(after[j]) {
		j++
	}
	switch {
	case j == len(after):
		return "", rest, true
	case after[j] == '=':
		return after[j+1:], rest, true
	}
	return "", rest, false // a longer name
}

// RemoveCookie removes every pair called name from a Cookie header value,
// whatever its value (well-formed or not), so that the application never sees
// the persistence cookie ("indirect" mode).
//
// When nothing matches, headerValue is returned unchanged and nothing is
// allocated. Otherwise the remaining pairs are kept byte for byte, in order,
// and joined with "; " (the separator RFC 6265 user agents send and that
// HAProxy writes where it removes a cookie); empty pairs are dropped. An
// empty result means the header should be removed, as HAProxy does.
func RemoveCookie(headerValue, name string) (newValue string, changed bool) {
	if !isToken(name) {
		return headerValue, false
	}
	v, run, removed := keptRun(headerValue, name)
	switch {
	case !removed:
		return headerValue, false
	case run:
		return v, true
	}
	return joinKept(headerValue, name), true
}

// joinKept joins the pairs of headerValue not called name with "; ",
// dropping empty pairs.
func joinKept(headerValue, name string) string {
	var b strings.Builder
	b.Grow(len(headerValue))
	for rest := headerValue; len(rest) > 0; {
		var part string
		part, rest, _ = strings.Cut(rest, ";")
		if part = trimOWS(part); part == "" {
			continue
		}
		if n, _ := pairName(part); n == name {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString(part)
	}
	return b.String()
}

// keptRun reports whether headerValue has a pair called name (removed)
// and, in the same pass, gives RemoveCookie's result when it is a
// substring of headerValue, which allocates nothing: the pairs kept form
// one run of headerValue, separated by exactly "; " (the usual header, with
// our cookie first, last or alone). run is false otherwise (a removed or
// empty pair between kept ones, other separators), and RemoveCookie builds
// the result.
func keptRun(headerValue, name string) (value string, run, removed bool) {
	start, end, have := 0, 0, false
	run = true
	for pos := 0; pos < len(headerValue); {
		stop, next := len(headerValue), len(headerValue)
		if i := strings.IndexByte(headerValue[pos:], ';'); i >= 0 {
			stop = pos + i
			next = stop + 1
		}
		ps, pe := pos, stop
		for ps < pe && isOWS(headerValue[ps]) {
			ps++
		}
		for pe > ps && isOWS(headerValue[pe-1]) {
			pe--
		}
		pos = next
		if ps == pe {
			continue
		}
		if n, _ := pairName(headerValue[ps:pe]); n == name {
			removed = true
			continue
		}
		if !have {
			start, have = ps, true
		} else if headerValue[end:ps] != "; " {
			run = false
		}
		end = pe
	}
	if !run {
		return "", false, removed
	}
	return headerValue[start:end], true, removed
}

// RewritePrefixedCookie removes the "<server>~" prefix from every pair called
// name in a Cookie header value, turning NAME=srv~app into NAME=app so that
// the application sees the value it set (prefix mode). Everything else is
// kept byte for byte. Pairs without '~' are left alone, as HAProxy does.
//
// What is removed is exactly the server part SplitPrefix finds in the value
// FindCookie returns, plus the '~': for a quoted value that is inside the
// quotes (NAME="s1~abc" becomes NAME="abc"; HAProxy, which does not know
// about quotes, would cut at the quote instead), and spaces after '=' count
// as part of the server, as in net/http. The prefix is removed whatever
// server it names: the caller routes with FindCookie and SplitPrefix.
//
// When nothing changes, headerValue is returned and nothing is allocated.
func RewritePrefixedCookie(headerValue, name string) (newValue string, changed bool) {
	if !isToken(name) {
		return headerValue, false
	}
	var b strings.Builder
	copied := 0 // headerValue[:copied] has been handled
	changed = false
	for start := 0; start < len(headerValue); {
		end := strings.IndexByte(headerValue[start:], ';')
		if end < 0 {
			end = len(headerValue)
		} else {
			end += start
		}
		cs, ce, ok := prefixSpan(headerValue, start, end, name)
		if ok {
			if !changed {
				b.Grow(len(headerValue))
				changed = true
			}
			b.WriteString(headerValue[copied:cs])
			copied = ce
		}
		start = end + 1
	}
	if !changed {
		return headerValue, false
	}
	b.WriteString(headerValue[copied:])
	return b.String(), true
}

// prefixSpan looks at the pair s[start:end] and, when it is called name and
// its value holds a '~', returns the span [cs, ce) of "<server>~".
func prefixSpan(s string, start, end int, name string) (cs, ce int, ok bool) {
	for start < end && isOWS(s[start]) {
		start++
	}
	for end > start && isOWS(s[end-1]) {
		end--
	}
	eq := strings.IndexByte(s[start:end], '=')
	if eq < 0 || trimOWS(s[start:start+eq]) != name {
		return 0, 0, false
	}
	// The value starts right after '=', spaces included, as net/http reads
	// it, so that what is removed is exactly the server part SplitPrefix
	// returns for FindCookie's value.
	vs, ve := start+eq+1, end
	if ve-vs > 1 && s[vs] == '"' && s[ve-1] == '"' {
		vs++
		ve--
	}
	t := strings.IndexByte(s[vs:ve], PrefixDelim)
	if t < 0 {
		return 0, 0, false
	}
	return vs, vs + t + 1, true
}

// setCookieValueSpan locates the cookie pair of a Set-Cookie header value:
// its name and the span [vs, ve) of its value (spaces around it excluded,
// quotes included). ok is false when the pair has no '=' or the name is not
// a token, in which case net/http would ignore the header too.
func setCookieValueSpan(line string) (name string, vs, ve int, ok bool) {
	end := strings.IndexByte(line, ';')
	if end < 0 {
		end = len(line)
	}
	eq := strings.IndexByte(line[:end], '=')
	if eq < 0 {
		return "", 0, 0, false
	}
	name = trimOWS(line[:eq])
	if !isToken(name) {
		return "", 0, 0, false
	}
	vs, ve = eq+1, end
	for vs < ve && isOWS(line[vs]) {
		vs++
	}
	for ve > vs && isOWS(line[ve-1]) {
		ve--
	}
	return name, vs, ve, true
}

// SetCookieName returns the name of the cookie a Set-Cookie header value
// sets, or "" when it cannot be parsed. In insert mode the application's own
// Set-Cookie for the persistence cookie name is dropped; this finds it
// without allocating.
func SetCookieName(line string) string {
	name, _, _, _ := setCookieValueSpan(line)
	return name
}

// PrefixSetCookie prepends "<server>~" to the value of a Set-Cookie header
// value that sets the cookie called name (prefix mode, response side). The
// rest of the header, attributes included, is kept byte for byte, and the
// prefix goes before an opening quote, as HAProxy does
// (NAME="v" becomes NAME=s1~"v"). It returns line unchanged and false for
// another cookie.
func PrefixSetCookie(line, name, server string) (newLine string, changed bool) {
	n, vs, _, ok := setCookieValueSpan(line)
	if !ok || n != name {
		return line, false
	}
	var b strings.Builder
	b.Grow(len(line) + len(server) + 1)
	b.WriteString(line[:vs])
	b.WriteString(server)
	b.WriteByte(PrefixDelim)
	b.WriteString(line[vs:])
	return b.String(), true
}

// RewriteSetCookie replaces the value of a Set-Cookie header value that sets
// the cookie called name with value (rewrite mode: the application emits the
// cookie, the proxy fills in the server's value). Attributes are kept byte
// for byte. It returns line unchanged and false for another cookie.
func RewriteSetCookie(line, name, value string) (newLine string, changed bool) {
	n, vs, ve, ok := setCookieValueSpan(line)
	if !ok || n != name {
		return line, false
	}
	var b strings.Builder
	b.Grow(len(line) - (ve - vs) + len(value))
	b.WriteString(line[:vs])
	b.WriteString(value)
	b.WriteString(line[ve:])
	return b.String(), true
}

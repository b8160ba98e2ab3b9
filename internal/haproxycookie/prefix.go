package haproxycookie

import "strings"

// PrefixDelim separates the server value from the application's value in
// prefix mode (HAProxy's COOKIE_DELIM).
const PrefixDelim = '~'

// SplitPrefix splits a prefix-mode value "<server>~<app>" at the first '~'.
// It does not allocate.
//
// ok reports whether a '~' was present. Without one, server is the whole
// value and app is "": HAProxy then still compares the whole value with the
// server values but leaves the cookie untouched on its way to the
// application. server may be empty ("~abc"): HAProxy never routes on an empty
// value but still strips the prefix, so callers should treat an empty server
// as "no server" and still forward app.
func SplitPrefix(raw string) (server, app string, ok bool) {
	i := strings.IndexByte(raw, PrefixDelim)
	if i < 0 {
		return raw, "", false
	}
	return raw[:i], raw[i+1:], true
}

// JoinPrefix returns "<server>~<app>", the value HAProxy gives the client in
// place of an application cookie in prefix mode. app is kept byte for byte,
// including surrounding double quotes (HAProxy writes s1~"quoted").
func JoinPrefix(server, app string) string {
	return string(AppendPrefix(make([]byte, 0, len(server)+1+len(app)), server, app))
}

// AppendPrefix appends JoinPrefix(server, app) to dst.
func AppendPrefix(dst []byte, server, app string) []byte {
	dst = append(dst, server...)
	dst = append(dst, PrefixDelim)
	return append(dst, app...)
}

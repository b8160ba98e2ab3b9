// Package haproxycookie implements HAProxy's persistence-cookie formats
// byte for byte, so that a cookie issued by HAProxy routes the same way
// through Caddy and vice versa. A fleet can then move from one proxy to the
// other without logging anybody out.
//
// The behaviour was established by reading HAProxy's sources
// (src/server.c srv_set_dyncookie, src/base64.c s30tob64/b64tos30,
// src/http_ana.c http_manage_client_side_cookies,
// http_manage_server_side_cookies and the Set-Cookie insertion in
// http_process_res_common) and checked against a running HAProxy 2.6.12;
// the observations are stored in testdata/haproxy_vectors.json and replayed
// by the tests. Nothing here is a translation of HAProxy's code.
//
// The formats are:
//
//   - Insert/rewrite/passive modes: NAME=<server>, and when "maxidle" or
//     "maxlife" is configured NAME=<server>|<lastseen>[|<firstseen>]. Each
//     date is 5 characters of standard base64 (A-Z a-z 0-9 + /, most
//     significant 6 bits first, no padding) of the low 30 bits of
//     (unix seconds + 3) >> 2, i.e. a 4-second resolution rounded up.
//   - Prefix mode: NAME=<server>~<application value>.
//   - Dynamic server values ("cookie ... dynamic" + "dynamic-cookie-key"):
//     16 lowercase hex digits of XXH64 (seed 0) over the key bytes, the
//     server's IP bytes in network order (4 or 16) and the port as a 4-byte
//     big-endian integer.
//
// Everything on the request path (Parse, FindCookie, Check, SplitPrefix) is
// allocation free: results are substrings of the input.
package haproxycookie

package haproxycookie

import "time"

// DateLen is the length of an encoded date field.
const DateLen = 5

// DateResolution is the granularity of encoded dates.
const DateResolution = 4 * time.Second

// b64Alphabet is the standard base64 alphabet. HAProxy's date fields use it
// ('+' and '/', not the URL-safe variant); they are never padded.
const b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

const date30Mask = 1<<30 - 1

// b64Value maps a byte to its 6-bit value, or 0xff when the byte is not in
// b64Alphabet. '=' is invalid: HAProxy's decoder rejects padding here.
var b64Value = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i := 0; i < len(b64Alphabet); i++ {
		t[b64Alphabet[i]] = byte(i)
	}
	return t
}()

// dateQuantum is the 30-bit quantity HAProxy writes for t: (unix + 3) >> 2,
// i.e. t rounded up to a multiple of 4 seconds and divided by 4. Only the low
// 30 bits are kept, as HAProxy's encoder does; this covers 1970 to early 2106
// and wraps afterwards. Sub-second precision is ignored (HAProxy uses the
// whole seconds of its clock).
func dateQuantum(t time.Time) uint32 {
	return uint32((t.Unix()+3)>>2) & date30Mask
}

// EncodeDate returns the 5-character date field HAProxy writes for a cookie
// issued at t. Decoding it gives t rounded up to the next multiple of
// DateResolution (or t itself when already a multiple).
func EncodeDate(t time.Time) [DateLen]byte {
	v := dateQuantum(t)
	var out [DateLen]byte
	// Most significant 6 bits first: bits 29..24, 23..18, ... 5..0.
	for i := 0; i < DateLen; i++ {
		out[i] = b64Alphabet[(v>>uint(24-6*i))&0x3f]
	}
	return out
}

// AppendDate appends EncodeDate(t) to dst.
func AppendDate(dst []byte, t time.Time) []byte {
	e := EncodeDate(t)
	return append(dst, e[:]...)
}

// DecodeDate decodes a 5-character date field. It reports false when s is not
// exactly 5 characters of the standard base64 alphabet. The result is UTC,
// has a whole number of seconds that is a multiple of 4, and lies between
// 1970-01-01 and 2106-02-07.
//
// "AAAAA" decodes to the Unix epoch; HAProxy treats a zero date as "no
// date", and Parse does the same.
func DecodeDate(s string) (time.Time, bool) {
	v, ok := decodeQuantum(s)
	if !ok {
		return time.Time{}, false
	}
	return time.Unix(int64(v)<<2, 0).UTC(), true
}

func decodeQuantum(s string) (uint32, bool) {
	if len(s) != DateLen {
		return 0, false
	}
	var v uint32
	for i := 0; i < DateLen; i++ {
		b := b64Value[s[i]]
		if b == 0xff {
			return 0, false
		}
		v = v<<6 | uint32(b)
	}
	return v, true
}

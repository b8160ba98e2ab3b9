package haproxycookie

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestEncodeDateKnown(t *testing.T) {
	for _, c := range []struct {
		unix int64
		want string
	}{
		{0, "AAAAA"},
		{1, "AAAAB"}, // (1+3)>>2 = 1: rounded up
		{4, "AAAAB"},
		{5, "AAAAC"},
		{63 * 4, "AAAA/"},
		{64 * 4, "AAABA"},
		{62 * 4, "AAAA+"},
		{(1<<30 - 1) * 4, "/////"},
		{1 << 32, "AAAAA"}, // the 30-bit field wraps in 2106
		{1795626705, "awcW1"},
	} {
		got := EncodeDate(time.Unix(c.unix, 0))
		if string(got[:]) != c.want {
			t.Errorf("EncodeDate(%d) = %s, want %s", c.unix, got[:], c.want)
		}
		if got := string(AppendDate([]byte("x"), time.Unix(c.unix, 0))); got != "x"+c.want {
			t.Errorf("AppendDate(%d) = %s", c.unix, got)
		}
	}
}

func TestEncodeDateIgnoresSubSecondAndZone(t *testing.T) {
	base := time.Unix(1795626705, 0)
	want := EncodeDate(base)
	for _, tm := range []time.Time{
		base.Add(999 * time.Millisecond),
		base.In(time.FixedZone("X", 5*3600)),
	} {
		if got := EncodeDate(tm); got != want {
			t.Errorf("EncodeDate(%v) = %s, want %s", tm, got[:], want[:])
		}
	}
}

func TestDecodeDateAlphabet(t *testing.T) {
	for i := 0; i < len(b64Alphabet); i++ {
		s := "AAAA" + string(b64Alphabet[i])
		got, ok := DecodeDate(s)
		if !ok || got.Unix() != int64(i)*4 {
			t.Errorf("DecodeDate(%q) = %v, %v; want %d", s, got.Unix(), ok, i*4)
		}
		if got.Location() != time.UTC {
			t.Errorf("DecodeDate(%q) not UTC", s)
		}
	}
}

func TestDecodeDateInvalid(t *testing.T) {
	for _, s := range []string{
		"", "A", "AAAA", "AAAAAA", "AAAA=", "AAAA-", "AAAA_", "AAAA.", "AAAA,",
		"AAAA ", " AAAA", "AAAA\x00", "AAAA\xff", "AAAé", "AAA|A", "AAAA~", "AAA\"A",
	} {
		if got, ok := DecodeDate(s); ok {
			t.Errorf("DecodeDate(%q) = %v, want failure", s, got)
		}
	}
}

func TestDateRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 10000; i++ {
		// The whole representable range: 1970 .. 2106.
		unix := r.Int64N(1<<32 - 3)
		e := EncodeDate(time.Unix(unix, 0))
		dec, ok := DecodeDate(string(e[:]))
		if !ok {
			t.Fatalf("DecodeDate(EncodeDate(%d)) failed", unix)
		}
		// Rounded up to the next multiple of 4 seconds.
		if d := dec.Unix() - unix; d < 0 || d > 3 || dec.Unix()%4 != 0 {
			t.Fatalf("unix %d -> %s -> %d", unix, e[:], dec.Unix())
		}
		// A decoded date re-encodes to the same characters: a carried-over
		// first-seen date is written back unchanged.
		if e2 := EncodeDate(dec); e2 != e {
			t.Fatalf("re-encode of %s gave %s", e[:], e2[:])
		}
		if strings.ContainsAny(string(e[:]), "=-_") {
			t.Fatalf("unexpected character in %s", e[:])
		}
	}
}

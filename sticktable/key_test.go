package sticktable

import (
	"errors"
	"testing"
)

func TestParseKeyPerType(t *testing.T) {
	tests := []struct {
		typ       KeyType
		len       int
		in        string
		canonical string // "" means the input is refused with ErrInvalidKey
	}{
		{KeyIP, 0, "10.0.0.1", "10.0.0.1"},
		{KeyIP, 0, "::ffff:10.0.0.1", "10.0.0.1"},
		{KeyIP, 0, "::FFFF:a00:1", "10.0.0.1"},
		{KeyIP, 0, "0.0.0.0", "0.0.0.0"},
		{KeyIP, 0, "2001:db8::1", ""},
		{KeyIP, 0, "10.0.0.256", ""},
		{KeyIP, 0, "010.0.0.1", ""},
		{KeyIP, 0, " 10.0.0.1", ""},
		{KeyIP, 0, "10.0.0.1:80", ""},
		{KeyIP, 0, "fe80::1%eth0", ""},
		{KeyIP, 0, "host.example", ""},
		{KeyIPv6, 0, "2001:DB8:0:0::1", "2001:db8::1"},
		{KeyIPv6, 0, "10.0.0.1", "::ffff:10.0.0.1"},
		{KeyIPv6, 0, "::ffff:10.0.0.1", "::ffff:10.0.0.1"},
		{KeyIPv6, 0, "::", "::"},
		{KeyIPv6, 0, "fe80::1%eth0", ""},
		{KeyIPv6, 0, "2001:db8::g", ""},
		{KeyInteger, 0, "42", "42"},
		{KeyInteger, 0, "-7", "-7"},
		{KeyInteger, 0, "+7", "7"},
		{KeyInteger, 0, "007", "7"},
		{KeyInteger, 0, "9223372036854775807", "9223372036854775807"},
		{KeyInteger, 0, "-9223372036854775808", "-9223372036854775808"},
		{KeyInteger, 0, "9223372036854775808", ""},
		{KeyInteger, 0, "1.5", ""},
		{KeyInteger, 0, "0x10", ""},
		{KeyInteger, 0, "1_000", ""},
		{KeyInteger, 0, " 1", ""},
		{KeyString, 0, "abc", "abc"},
		{KeyString, 4, "abcdef", "abcd"},
		{KeyString, 0, "0123456789012345678901234567890123456789", "01234567890123456789012345678901"},
		{KeyString, 3, "h\xc3\xa9llo", "h\xc3\xa9"},
		{KeyBinary, 0, "DEADbeef", "deadbeef"},
		{KeyBinary, 2, "aabbcc", "aabb"},
		{KeyBinary, 2, "aabbzz", ""}, // the whole text must be hex, even past the truncation
		{KeyBinary, 0, "abc", ""},
		{KeyBinary, 0, "zz", ""},
		{KeyBinary, 0, "0x00", ""},
	}
	for _, tt := range tests {
		k, err := ParseKey(tt.typ, tt.len, tt.in)
		if tt.canonical == "" {
			if !errors.Is(err, ErrInvalidKey) {
				t.Errorf("%s %q: got %v, %v; want ErrInvalidKey", tt.typ, tt.in, k, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s %q: %v", tt.typ, tt.in, err)
			continue
		}
		if got := k.String(); got != tt.canonical {
			t.Errorf("%s %q: rendered %q, want %q", tt.typ, tt.in, got, tt.canonical)
		}
		// Canonical text parses back to the same key.
		if k2, err := ParseKey(tt.typ, tt.len, k.String()); err != nil || k2 != k {
			t.Errorf("%s %q: canonical %q reparsed to %v, %v", tt.typ, tt.in, k.String(), k2, err)
		}
		// Stored bytes round-trip too.
		if k3, err := keyFromBytes(tt.typ, max(tt.len, DefaultLen), k.AppendBytes(nil)); err != nil || k3 != k {
			t.Errorf("%s %q: bytes round trip gave %v, %v", tt.typ, tt.in, k3, err)
		}
		if k.Type() != tt.typ {
			t.Errorf("%s %q: Type() = %s", tt.typ, tt.in, k.Type())
		}
	}
	for typ := KeyString; typ <= KeyBinary; typ++ {
		if _, err := ParseKey(typ, 0, ""); err != ErrEmptyKey {
			t.Errorf("%s: empty key gave %v, want ErrEmptyKey", typ, err)
		}
	}
}

func TestKeyBytesLength(t *testing.T) {
	for _, typ := range []KeyType{KeyIP, KeyIPv6, KeyInteger} {
		if _, err := keyFromBytes(typ, 0, make([]byte, 3)); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("%s: 3 bytes accepted: %v", typ, err)
		}
	}
	k, err := keyFromBytes(KeyString, 2, []byte("abc"))
	if err != nil || k.String() != "ab" {
		t.Errorf("truncation from bytes: %v %v", k, err)
	}
}

func TestKeyCompare(t *testing.T) {
	order := map[KeyType][]string{
		KeyInteger: {"-9223372036854775808", "-5", "-1", "0", "3", "10", "9223372036854775807"},
		KeyIP:      {"0.0.0.0", "9.255.255.255", "10.0.0.1", "10.0.0.2", "255.255.255.255"},
		KeyIPv6:    {"::", "::1", "::ffff:10.0.0.1", "2001:db8::1", "fe80::1"},
		KeyString:  {"A", "a", "aa", "b"},
		KeyBinary:  {"00", "0000", "01", "ff"},
	}
	for typ, keys := range order {
		for i := range keys {
			for j := range keys {
				a, _ := ParseKey(typ, 0, keys[i])
				b, _ := ParseKey(typ, 0, keys[j])
				want := 0
				if i < j {
					want = -1
				} else if i > j {
					want = 1
				}
				if got := a.Compare(b); got != want {
					t.Errorf("%s: Compare(%s, %s) = %d, want %d", typ, keys[i], keys[j], got, want)
				}
			}
		}
	}
}

func TestParseKeyType(t *testing.T) {
	for typ := KeyString; typ <= KeyBinary; typ++ {
		got, err := ParseKeyType(typ.String())
		if err != nil || got != typ {
			t.Errorf("ParseKeyType(%q) = %v, %v", typ.String(), got, err)
		}
	}
	if _, err := ParseKeyType("ipv4"); err == nil {
		t.Error("ParseKeyType(ipv4) accepted")
	}
	if !KeyString.HasLen() || !KeyBinary.HasLen() || KeyIP.HasLen() {
		t.Error("HasLen wrong")
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]int{"1": 1, "100": 100, "1k": 1024, "10K": 10240, "1m": 1 << 20, "2M": 2 << 20, "1024m": 1 << 30}
	for in, want := range good {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1", "1g", "k", "1.5k", "1025m", " 1", "+1", "99999999999"} {
		if got, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want error", in, got)
		}
	}
}

func TestConfigDefaults(t *testing.T) {
	tab, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()
	c := tab.Config()
	if c.Type != KeyString || c.Len != 32 || c.Size != 1<<20 || c.Expire != DefaultExpire || c.Retention != 2*DefaultExpire || c.NoPurge {
		t.Errorf("defaults: %+v", c)
	}
	tab2, err := New(Config{Type: KeyIP, Expire: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer tab2.Close()
	if c := tab2.Config(); c.Len != 0 || c.Retention != MinRetention {
		t.Errorf("ip defaults: %+v", c)
	}
	for _, bad := range []Config{
		{Type: KeyIP, Len: 4},
		{Type: KeyString, Len: -1},
		{Type: KeyBinary, Len: MaxLen + 1},
		{Size: -1},
		{Size: MaxSize + 1},
		{Expire: -1},
		{Retention: -1},
		{Type: 9},
	} {
		if tab, err := New(bad); err == nil {
			tab.Close()
			t.Errorf("New(%+v) accepted", bad)
		}
	}
}

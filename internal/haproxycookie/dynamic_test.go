package haproxycookie

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// referenceDynamic builds HAProxy's buffer explicitly and hashes it in one
// call, independently of the streaming implementation.
func referenceDynamic(key []byte, addrBytes []byte, port uint32) string {
	buf := append(append([]byte{}, key...), addrBytes...)
	buf = binary.BigEndian.AppendUint32(buf, port)
	return fmt.Sprintf("%016x", xxhash.Sum64(buf))
}

func TestDynamicValueReference(t *testing.T) {
	for _, c := range []struct {
		key  string
		addr string
		port uint16
	}{
		{"MYKEY", "127.0.0.1", 18101},
		{"", "10.0.0.1", 80},
		{"k", "0.0.0.0", 0},
		{"k", "255.255.255.255", 65535},
		{"a much longer key than thirty-two bytes, to cross xxhash's block size", "2001:db8::1", 443},
		{"MYKEY", "::ffff:127.0.0.1", 18101},
	} {
		a := netip.MustParseAddr(c.addr)
		var ab []byte
		if a.Is4() {
			b := a.As4()
			ab = b[:]
		} else {
			b := a.As16()
			ab = b[:]
		}
		want := referenceDynamic([]byte(c.key), ab, uint32(c.port))
		got := DynamicValue([]byte(c.key), a, c.port)
		if got != want || len(got) != DynamicValueLen {
			t.Errorf("DynamicValue(%q, %s, %d) = %s, want %s", c.key, c.addr, c.port, got, want)
		}
	}
}

func TestDynamicValueDetails(t *testing.T) {
	key := []byte("MYKEY")
	v4 := DynamicValue(key, netip.MustParseAddr("127.0.0.1"), 18101)
	if v4 != "20d1e6c669ae75a9" { // observed on HAProxy 2.6.12, see testdata
		t.Fatalf("got %s", v4)
	}
	if got := DynamicValue(key, netip.MustParseAddr("::ffff:127.0.0.1"), 18101); got == v4 {
		t.Errorf("IPv4-mapped address must hash as 16 bytes")
	}
	if got := DynamicValue(key, netip.MustParseAddr("127.0.0.1"), 18102); got == v4 {
		t.Errorf("port not hashed")
	}
	z := DynamicValue(key, netip.MustParseAddr("fe80::1%eth0"), 80)
	if got := DynamicValue(key, netip.MustParseAddr("fe80::1"), 80); got != z {
		t.Errorf("zone must not change the value: %s vs %s", got, z)
	}
	if got := DynamicValue(key, netip.Addr{}, 80); got != "" {
		t.Errorf("invalid address: %q", got)
	}
	if got := string(AppendDynamicValue([]byte("x"), key, netip.Addr{}, 80)); got != "x" {
		t.Errorf("AppendDynamicValue with invalid address: %q", got)
	}
	if got := string(AppendDynamicValue([]byte("SRV="), key, netip.MustParseAddr("127.0.0.1"), 18101)); got != "SRV="+v4 {
		t.Errorf("AppendDynamicValue = %q", got)
	}
}

func TestDynamicValueHost(t *testing.T) {
	key := []byte("MYKEY")
	v4 := DynamicValue(key, netip.MustParseAddr("127.0.0.1"), 18101)
	v6 := DynamicValue(key, netip.MustParseAddr("::1"), 18103)
	for _, c := range []struct {
		host string
		port uint16
		want string
	}{
		{"127.0.0.1", 18101, v4},
		{"::1", 18103, v6},
		{"[::1]", 18103, v6},
	} {
		if got := DynamicValueHost(key, c.host, c.port); got != c.want {
			t.Errorf("DynamicValueHost(%q) = %s, want %s", c.host, got, c.want)
		}
	}
	name := DynamicValueHost(key, "backend.internal", 8080)
	want := referenceDynamic(key, []byte("backend.internal"), 8080)
	if name != want {
		t.Errorf("host name: %s, want %s", name, want)
	}
	if DynamicValueHost(key, "Backend.internal", 8080) == name {
		t.Errorf("host bytes are hashed as given")
	}
	if DynamicValueHost(key, "backend.internal", 8081) == name {
		t.Errorf("port not hashed")
	}
}

func TestAppendHex64(t *testing.T) {
	for v, want := range map[uint64]string{
		0:                  "0000000000000000",
		0xf:                "000000000000000f",
		0xdeadbeef:         "00000000deadbeef",
		0xffffffffffffffff: "ffffffffffffffff",
		0x0123456789abcdef: "0123456789abcdef",
	} {
		if got := string(appendHex64(nil, v)); got != want {
			t.Errorf("%x: %s", v, got)
		}
	}
}

package haproxycookie

import (
	"encoding/binary"
	"net/netip"

	"github.com/cespare/xxhash/v2"
)

// DynamicValueLen is the length of a dynamic server value: XXH64 printed as
// 16 lowercase hex digits, zero padded (HAProxy formats it with %016llx).
const DynamicValueLen = 16

// DynamicValue returns the value HAProxy's "cookie <name> ... dynamic" option
// assigns to a server at addr:port when the backend has
// "dynamic-cookie-key <key>".
//
// The hashed bytes are: key, then the address (4 bytes for an IPv4 address,
// 16 bytes for an IPv6 one, network order), then the port as a 4-byte
// big-endian integer. HAProxy stores the port in an int and deliberately
// converts it with htonl so that load balancers of any endianness agree,
// hence 4 bytes and not 2. The seed is 0.
//
// An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is hashed as 16 bytes, as
// HAProxy does for a server written that way, so it does not share the value
// of the plain IPv4 address; callers must keep the spelling HAProxy used. An
// IPv6 zone is not part of the hash. An invalid addr yields "" because
// HAProxy assigns no dynamic value to servers without an IPv4/IPv6 address.
func DynamicValue(key []byte, addr netip.Addr, port uint16) string {
	var buf [DynamicValueLen]byte
	return string(AppendDynamicValue(buf[:0], key, addr, port))
}

// AppendDynamicValue appends DynamicValue(key, addr, port) to dst without
// allocating (beyond growing dst). It appends nothing for an invalid addr.
func AppendDynamicValue(dst, key []byte, addr netip.Addr, port uint16) []byte {
	if !addr.IsValid() {
		return dst
	}
	var d xxhash.Digest // zero value is not usable: Reset installs seed 0
	d.Reset()
	_, _ = d.Write(key)
	if addr.Is4() {
		a := addr.As4()
		_, _ = d.Write(a[:])
	} else {
		a := addr.As16()
		_, _ = d.Write(a[:])
	}
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], uint32(port))
	_, _ = d.Write(p[:])
	return appendHex64(dst, d.Sum64())
}

// DynamicValueHost is DynamicValue for a server whose dial address is a host
// name rather than an IP literal.
//
// If host is an IP literal (optionally in brackets, with an optional IPv6
// zone) the result is exactly DynamicValue. Otherwise the host name bytes,
// exactly as given (no case folding, no trailing-dot removal), take the
// place of the address bytes: key || host || port as 4 bytes big-endian.
// HAProxy itself resolves the name when it loads its configuration and hashes
// the resolved address (observed: "localhost:18101" gets the same value as
// "127.0.0.1:18101"), so a value produced here for a name will NOT match
// HAProxy's. It is stable across Caddy instances configured with the same
// spelling and does not change when DNS answers change, which is what a
// sticky value needs. Use IP literals where HAProxy compatibility matters.
func DynamicValueHost(key []byte, host string, port uint16) string {
	h := host
	if len(h) >= 2 && h[0] == '[' && h[len(h)-1] == ']' {
		h = h[1 : len(h)-1]
	}
	if addr, err := netip.ParseAddr(h); err == nil {
		return DynamicValue(key, addr, port)
	}
	var d xxhash.Digest
	d.Reset()
	_, _ = d.Write(key)
	_, _ = d.WriteString(host)
	var p [4]byte
	binary.BigEndian.PutUint32(p[:], uint32(port))
	_, _ = d.Write(p[:])
	var buf [DynamicValueLen]byte
	return string(appendHex64(buf[:0], d.Sum64()))
}

const hexDigits = "0123456789abcdef"

// appendHex64 appends v as exactly 16 lowercase hex digits (%016llx).
func appendHex64(dst []byte, v uint64) []byte {
	for shift := 60; shift >= 0; shift -= 4 {
		dst = append(dst, hexDigits[(v>>uint(shift))&0xf])
	}
	return dst
}

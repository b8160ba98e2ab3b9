package layer4

import (
	"net"
	"net/netip"

	"github.com/mholt/caddy-l4/layer4"

	"github.com/caddy-sticky/sticky/internal/rendezvous"
	"github.com/caddy-sticky/sticky/selection"
	"github.com/caddy-sticky/sticky/sticktable"
)

// clientKey is the table key of the connection's client: the IP address of
// its remote end. After caddy-l4's proxy_protocol handler the connection is
// the one that handler wrapped, whose remote address is the one the PROXY
// header carried. addr is that address, for placing a new client; it is
// valid even when the table cannot hold it. For ip and ipv6 tables this
// allocates nothing.
func (p *StickTable) clientKey(conn *layer4.Connection) (key sticktable.Key, addr netip.Addr, ok bool) {
	addr, ok = remoteIP(conn.RemoteAddr())
	if !ok {
		return key, addr, false
	}
	// An IPv4 client of a dual-stack listener shows as ::ffff:a.b.c.d; its
	// key is the IPv4 address, as the HTTP policy's {client_ip} gives it.
	addr = addr.Unmap()
	var err error
	switch p.keyType {
	case sticktable.KeyIP:
		if !addr.Is4() {
			p.debug("an IPv6 client does not fit an ip table (use type ipv6)", addr.String())
			return key, addr, false
		}
		a4 := addr.As4()
		key, err = p.table.KeyFromBytes(a4[:])
	case sticktable.KeyIPv6:
		a16 := addr.As16()
		key, err = p.table.KeyFromBytes(a16[:])
	default:
		var text [64]byte
		key, err = p.table.KeyFromBytes(addr.AppendTo(text[:0]))
	}
	if err != nil {
		p.debug("client address refused by the table", err.Error())
		return key, addr, false
	}
	return key, addr, true
}

// placementHash is the rendezvous hash of a client address: the hash of its
// text, as the HTTP policy hashes {client_ip}.
func placementHash(addr netip.Addr) uint64 {
	var text [64]byte
	return rendezvous.HashBytes(addr.AppendTo(text[:0]))
}

// remoteIP extracts the IP of a remote address without allocating for the
// address types of TCP and UDP connections. A zone (link-local IPv6) names
// the interface the client came in on, not the client, and is dropped.
func remoteIP(a net.Addr) (netip.Addr, bool) {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case *net.UDPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	case nil:
		return ip, false
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return ip, false
		}
		ip = ap.Addr()
	}
	return ip.WithZone(""), ip.IsValid()
}

// outcomeValues are the outcomes' names already boxed, so setting the
// placeholder does not allocate.
var outcomeValues = func() (v [numShared]any) {
	for o := range v {
		v[o] = selection.Outcome(o).String()
	}
	return v
}()

// OutcomePlaceholder carries how persistence decided the connection, for
// caddy-l4's logs: the words of {http.sticky.outcome} and of the metrics.
const OutcomePlaceholder = "l4.sticky.outcome"

func setOutcomePlaceholder(conn *layer4.Connection, o selection.Outcome) {
	repl := conn.Replacer()
	if repl == nil {
		return
	}
	if int(o) < len(outcomeValues) {
		repl.Set(OutcomePlaceholder, outcomeValues[o])
		return
	}
	repl.Set(OutcomePlaceholder, o.String())
}

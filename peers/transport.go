package peers

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// transport wraps memberlist's NetTransport to count the bytes that
// really cross the network (memberlist framing, encryption, gossip and
// probes included), which is what the group's wire metrics report. Tests
// also use its isolate switch to simulate a partition with real sockets.
type transport struct {
	inner *memberlist.NetTransport

	packets chan *memberlist.Packet
	streams chan net.Conn
	closing chan struct{} // Shutdown started: drop instead of forwarding
	stop    chan struct{} // the inner transport is down: forwarders exit
	once    sync.Once

	// isolated drops every packet and stream to and from this node.
	isolated atomic.Bool

	bytesSent, bytesRecv     atomic.Uint64
	packetsSent, packetsRecv atomic.Uint64
}

var _ memberlist.NodeAwareTransport = (*transport)(nil)

var errIsolated = errors.New("peers: node isolated")

func newTransport(inner *memberlist.NetTransport) *transport {
	t := &transport{
		inner:   inner,
		packets: make(chan *memberlist.Packet),
		streams: make(chan net.Conn),
		closing: make(chan struct{}),
		stop:    make(chan struct{}),
	}
	go t.forwardPackets()
	go t.forwardStreams()
	return t
}

func (t *transport) forwardPackets() {
	in := t.inner.PacketCh()
	for {
		select {
		case <-t.stop:
			return
		case p := <-in:
			if t.isolated.Load() {
				continue
			}
			t.packetsRecv.Add(1)
			t.bytesRecv.Add(uint64(len(p.Buf)))
			select {
			case t.packets <- p:
			case <-t.closing:
			}
		}
	}
}

func (t *transport) forwardStreams() {
	in := t.inner.StreamCh()
	for {
		select {
		case <-t.stop:
			return
		case c := <-in:
			if t.isolated.Load() {
				c.Close()
				continue
			}
			select {
			case t.streams <- &countingConn{Conn: c, t: t}:
			case <-t.closing:
				c.Close()
			}
		}
	}
}

func (t *transport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return t.inner.FinalAdvertiseAddr(ip, port)
}

func (t *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (t *transport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.isolated.Load() {
		// Pretend it left: a partition loses packets silently.
		return time.Now(), nil
	}
	t.packetsSent.Add(1)
	t.bytesSent.Add(uint64(len(b)))
	return t.inner.WriteToAddress(b, a)
}

func (t *transport) PacketCh() <-chan *memberlist.Packet { return t.packets }

func (t *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (t *transport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.isolated.Load() {
		return nil, errIsolated
	}
	c, err := t.inner.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, t: t}, nil
}

func (t *transport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown stops the inner transport. The forwarders keep draining it
// meanwhile: its listeners hand packets and connections over unbuffered
// channels and its Shutdown waits for them, so a forwarder that stopped
// reading first would hang it.
func (t *transport) Shutdown() error {
	var err error
	t.once.Do(func() {
		close(t.closing)
		err = t.inner.Shutdown()
		close(t.stop)
	})
	return err
}

// countingConn counts stream bytes into its transport.
type countingConn struct {
	net.Conn
	t *transport
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.t.bytesRecv.Add(uint64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.t.bytesSent.Add(uint64(n))
	return n, err
}

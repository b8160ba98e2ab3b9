package valkey

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	vk "github.com/valkey-io/valkey-go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-sticky/sticky/sticktable"
)

// Table is a stick table bound to a Store: it implements
// sticktable.Backing. Its methods keep the local table in step with what
// they learn, and on any store error apply the caller's decision locally.
type Table struct {
	s         *Store
	name      string
	t         *sticktable.Table
	keyPrefix string // <prefix><table>:
	// expireMs is the table's expire in milliseconds, set by Bind (a
	// reload that changes the table's expire binds it again).
	expireMs atomic.Int64
}

// Local returns the local table (the cache).
func (tb *Table) Local() *sticktable.Table { return tb.t }

// Name is the table's name.
func (tb *Table) Name() string { return tb.name }

// Store is the store the table is kept in.
func (tb *Table) Store() *Store { return tb.s }

func (tb *Table) redisKey(k sticktable.Key) string {
	var buf [64]byte
	b := append(buf[:0], tb.keyPrefix...)
	return string(k.AppendBytes(b))
}

func (tb *Table) expire() time.Duration { return tb.t.Config().Expire }

func (tb *Table) ttlArg() string { return strconv.FormatInt(max(tb.expire().Milliseconds(), 1), 10) }

// Lookup implements sticktable.Backing.
func (tb *Table) Lookup(ctx context.Context, k sticktable.Key) (string, bool, error) {
	key := tb.redisKey(k)
	s0 := tb.s.stripe(key).Load()
	res, err := tb.s.call(ctx, opGet, func(ctx context.Context, c vk.Client) vk.ValkeyResult {
		return c.Do(ctx, c.B().Get().Key(key).Build())
	})
	if err != nil {
		return "", false, err
	}
	raw, err := res.ToString()
	if err != nil { // nil reply: absent
		return "", false, nil
	}
	v, ok := tb.decode(raw)
	if !ok {
		return "", false, nil
	}
	tb.installGuarded(k, v.server, key, s0)
	return v.server, true, nil
}

// Place implements sticktable.Backing: SET NX GET, one round trip that
// either writes server or returns the value someone wrote first.
func (tb *Table) Place(ctx context.Context, k sticktable.Key, server string) (string, error) {
	key := tb.redisKey(k)
	s0 := tb.s.stripe(key).Load()
	val := string(encodeValue(nil, tb.s.clock.Now(), tb.s.node, server))
	ttl := max(tb.expire().Milliseconds(), 1)
	res, err := tb.s.call(ctx, opPlace, func(ctx context.Context, c vk.Client) vk.ValkeyResult {
		return c.Do(ctx, c.B().Set().Key(key).Value(val).Nx().Get().PxMilliseconds(ttl).Build())
	})
	if err != nil {
		tb.install(k, server)
		tb.verifyLater(ctx, k, "", server, err)
		return server, err
	}
	raw, err := res.ToString()
	if err != nil { // nil: the key was absent and is ours now
		tb.installGuarded(k, server, key, s0)
		return server, nil
	}
	if v, ok := tb.decode(raw); ok {
		tb.installGuarded(k, v.server, key, s0)
		return v.server, nil
	}
	// Someone else's or a damaged value: replace exactly that value.
	res, err = tb.s.call(ctx, opPlace, func(ctx context.Context, c vk.Client) vk.ValkeyResult {
		return replaceScript.Exec(ctx, c, []string{key}, []string{raw, val, strconv.FormatInt(ttl, 10)})
	})
	return tb.adopt(k, server, key, s0, res, err)
}

// Restick implements sticktable.Backing.
func (tb *Table) Restick(ctx context.Context, k sticktable.Key, from, to string) (string, error) {
	key := tb.redisKey(k)
	s0 := tb.s.stripe(key).Load()
	val := string(encodeValue(nil, tb.s.clock.Now(), tb.s.node, to))
	ttl := tb.ttlArg()
	res, err := tb.s.call(ctx, opRestick, func(ctx context.Context, c vk.Client) vk.ValkeyResult {
		return restickScript.Exec(ctx, c, []string{key}, []string{val, from, ttl})
	})
	if err != nil {
		tb.verifyLater(ctx, k, from, to, err)
	}
	return tb.adopt(k, to, key, s0, res, err)
}

// verifyLater queues the write again in the background after a request's
// call timed out or failed while the breaker stayed closed (an open
// breaker leaves it to reconciliation), so an instance that decided
// alone on a slow answer converges within milliseconds, not at expiry.
func (tb *Table) verifyLater(ctx context.Context, k sticktable.Key, from, to string, err error) {
	if ctx.Value(backgroundKey{}) != nil || errors.Is(err, ErrUnavailable) || tb.s.br.isOpen() {
		return
	}
	if _, refused := vk.IsValkeyErr(err); refused {
		return // the server answered no (NOPERM...): asking again changes nothing
	}
	tb.s.enqueue(job{kind: jobVerify, tb: tb, key: k, server: to, from: from})
}

// Pin implements sticktable.Backing.
func (tb *Table) Pin(ctx context.Context, k sticktable.Key, server string) error {
	key := tb.redisKey(k)
	s0 := tb.s.stripe(key).Load()
	ver := tb.s.clock.Now()
	val := string(encodeValue(nil, ver, tb.s.node, server))
	ttl := tb.ttlArg()
	res, err := tb.s.call(ctx, opPin, func(ctx context.Context, c vk.Client) vk.ValkeyResult {
		return pinScript.Exec(ctx, c, []string{key}, []string{val, versionHex(ver), ttl})
	})
	_, err = tb.adopt(k, server, key, s0, res, err)
	return err
}

// adopt installs the value a conditional write left in the store (or, when
// the write failed, the caller's own decision) and returns its server.
func (tb *Table) adopt(k sticktable.Key, mine, key string, s0 uint32, res vk.ValkeyResult, err error) (string, error) {
	if err != nil {
		tb.install(k, mine)
		return mine, err
	}
	raw, err := res.ToString()
	if err != nil {
		tb.install(k, mine)
		return mine, err
	}
	v, ok := decodeValue(raw)
	if !ok { // cannot happen: the script returns ours or a decodable one
		tb.install(k, mine)
		return mine, nil
	}
	tb.installGuarded(k, v.server, key, s0)
	return v.server, nil
}

// Delete implements sticktable.Backing.
func (tb *Table) Delete(ctx context.Context, k sticktable.Key) error {
	key := tb.redisKey(k)
	ver := versionHex(tb.s.clock.Now())
	tb.evict(k)
	_, err := tb.s.call(ctx, opDelete, func(ctx context.Context, c vk.Client) vk.ValkeyResult {
		return deleteScript.Exec(ctx, c, []string{key}, []string{ver, ""})
	})
	return err
}

// Clear implements sticktable.Backing: it pages through the table's keys
// with SCAN and deletes each with the conditional delete, so entries
// written after the clear began survive, as they do locally.
func (tb *Table) Clear(ctx context.Context, server string) (int, error) {
	ver := versionHex(tb.s.clock.Now())
	if server == "" {
		tb.t.Clear()
		if mv, _ := tb.t.ClearMark(); mv != 0 {
			tb.s.clock.Observe(mv)
		}
	} else {
		var drop []sticktable.Key
		tb.t.Range(func(e sticktable.Entry) bool {
			if e.Server == server {
				drop = append(drop, e.Key)
			}
			return true
		})
		for _, k := range drop {
			tb.evict(k)
		}
	}
	n := 0
	err := tb.scanKeys(ctx, func(keys []string) error {
		res, err := tb.s.callMulti(ctx, opClear, func(ctx context.Context, c vk.Client) []vk.ValkeyResult {
			execs := make([]vk.LuaExec, len(keys))
			for i, key := range keys {
				execs[i] = vk.LuaExec{Keys: []string{key}, Args: []string{ver, server}}
			}
			return deleteScript.ExecMulti(ctx, c, execs...)
		})
		if err != nil {
			return err
		}
		for _, r := range res {
			if d, err := r.AsInt64(); err == nil && d == 1 {
				n++
			}
		}
		return nil
	})
	return n, err
}

// Touch implements sticktable.Backing. The local entry's version records
// when it was last installed or refreshed here (see install), so the
// throttle needs no memory of its own.
//
// It does not allocate and reads no clock on the common path.
func (tb *Table) Touch(k sticktable.Key, e sticktable.Entry) {
	if e.Server == "" {
		return
	}
	// A hit just pushed the entry's expiry to now + expire (to within the
	// table's refresh granularity, at most 1s): no clock read needed.
	expire := tb.expireMs.Load()
	now := e.ExpiresAt.UnixMilli() - expire
	if now-int64(e.Version>>sticktable.LogicalBits) < expire/4 {
		return
	}
	// Restamp first, so the hits that follow do not queue the same refresh.
	tb.install(k, e.Server)
	tb.s.enqueue(job{kind: jobRefresh, tb: tb, key: k, server: e.Server})
}

// refresh pushes the key's TTL in the store out to a full expire. If the
// key is gone from the store (it expired there, or the store lost it) it
// is written back if absent; if another server won meanwhile, that one is
// adopted.
func (tb *Table) refresh(k sticktable.Key, server string) {
	key := tb.redisKey(k)
	ttl := max(tb.expire().Milliseconds(), 1)
	res, err := tb.s.call(background(), opRefresh, func(ctx context.Context, c vk.Client) vk.ValkeyResult {
		return c.Do(ctx, c.B().Pexpire().Key(key).Milliseconds(ttl).Gt().Build())
	})
	if err != nil {
		return
	}
	if n, err := res.AsInt64(); err == nil && n == 1 {
		return
	}
	// 0: absent, or another instance refreshed it further just now.
	_, _ = tb.Place(background(), k, server)
}

// decode decodes a value read from the store, counting the ones that do
// not decode.
func (tb *Table) decode(raw string) (storedValue, bool) {
	v, ok := decodeValue(raw)
	if !ok {
		tb.s.m.malformed.Inc()
		if c := tb.s.logger.Check(zapcore.DebugLevel, "malformed value in the store treated as absent"); c != nil {
			if len(raw) > 64 {
				raw = raw[:64]
			}
			c.Write(zap.String("store", tb.s.name), zap.String("table", tb.name), zap.ByteString("value", []byte(raw)))
		}
	}
	return v, ok
}

// install sticks k to server in the local table. Local versions come from
// the store's clock, so each install supersedes the previous one and
// stamps the time of this install (which Touch reads).
func (tb *Table) install(k sticktable.Key, server string) {
	for range 2 {
		ok, err := tb.t.Apply(sticktable.Change{Op: sticktable.OpStore, Key: k, Server: server,
			Version: tb.s.clock.Now(), Node: tb.s.node, TTL: tb.expire()})
		if err != nil || ok {
			return
		}
		// The table holds something newer: a write made directly on it,
		// or a Clear watermark. Catch up with its clock and try once more.
		if mv, _ := tb.t.ClearMark(); mv != 0 {
			tb.s.clock.Observe(mv)
		}
		if e, found := tb.t.GetKey(k); found {
			tb.s.clock.Observe(e.Version)
		}
		tb.s.clock.Observe(tb.s.clock.Now() + 1<<sticktable.LogicalBits)
	}
}

// installGuarded is install for a value read from the store: if an
// invalidation of the key (or of one sharing its stripe) arrived since s0
// was read, before the call was sent, the value may already be stale. The
// copy is then dropped again and read once more in the background. Most
// such invalidations are older than the value (the server sent them
// before our reply, and the reader handled them after s0 was read), so
// the second read, which starts after them, installs for good.
func (tb *Table) installGuarded(k sticktable.Key, server, key string, s0 uint32) {
	tb.install(k, server)
	if tb.s.stripe(key).Load() != s0 {
		tb.evict(k)
		tb.s.enqueue(job{kind: jobRefetch, tb: tb, key: k})
	}
}

// evict drops the local copy of k.
func (tb *Table) evict(k sticktable.Key) {
	if _, held := tb.t.GetKey(k); !held {
		return
	}
	_, _ = tb.t.Apply(sticktable.Change{Op: sticktable.OpDelete, Key: k,
		Version: tb.s.clock.Now(), Node: tb.s.node})
}

// reconcile compares every local entry with the store after an outage:
// entries the store lacks are written if absent (the decisions made
// locally meanwhile), entries the store holds with another server take
// the store's server (the first placement, or a change made elsewhere).
func (tb *Table) reconcile() (written, adopted int, err error) {
	const batch = 128
	var keys []sticktable.Key
	var servers []string
	flush := func() error {
		if len(keys) == 0 {
			return nil
		}
		ttl := max(tb.expire().Milliseconds(), 1)
		ver := tb.s.clock.Now()
		rkeys := make([]string, len(keys))
		res, err := tb.s.callMulti(background(), opReconcile, func(ctx context.Context, c vk.Client) []vk.ValkeyResult {
			cmds := make(vk.Commands, len(keys))
			for i, k := range keys {
				rkeys[i] = tb.redisKey(k)
				val := string(encodeValue(nil, ver, tb.s.node, servers[i]))
				cmds[i] = c.B().Set().Key(rkeys[i]).Value(val).Nx().Get().PxMilliseconds(ttl).Build()
			}
			return c.DoMulti(ctx, cmds...)
		})
		if err != nil {
			return err
		}
		var failed error
		for i, r := range res {
			raw, err := r.ToString()
			if err != nil {
				if vk.IsValkeyNil(err) {
					written++
					tb.s.m.written.Inc()
				} else if failed == nil {
					// The server refused this one (LOADING right after a
					// restart, NOPERM...): the whole pass is retried.
					failed = fmt.Errorf("reconciling %s: %w", keys[i].String(), err)
				}
				continue
			}
			if v, ok := tb.decode(raw); ok && v.server != servers[i] {
				tb.install(keys[i], v.server)
				adopted++
				tb.s.m.adopted.Inc()
			}
		}
		keys, servers = keys[:0], servers[:0]
		return failed
	}
	tb.t.Range(func(e sticktable.Entry) bool {
		keys = append(keys, e.Key)
		servers = append(servers, e.Server)
		if len(keys) == batch {
			if err = flush(); err != nil {
				return false
			}
		}
		return true
	})
	if err == nil {
		err = flush()
	}
	return written, adopted, err
}

var _ sticktable.Backing = (*Table)(nil)

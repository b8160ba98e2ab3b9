package valkey

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	vk "github.com/valkey-io/valkey-go"

	"github.com/caddy-sticky/sticky/sticktable"
)

// scanCount is the COUNT hint of each SCAN: how many keys one call
// examines, so a page costs a bounded amount of server time.
const scanCount = 512

// List returns about limit entries of the table as the store holds them
// (for the admin API), starting at cursor ("" for the first page), and the
// cursor of the next page ("" after the last). SCAN guarantees every key
// present for the whole listing is returned at least once; a key may
// appear twice across pages, and pages are not sorted. On a cluster each
// node is scanned in turn.
func (tb *Table) List(ctx context.Context, cursor string, limit int) ([]sticktable.Entry, string, error) {
	if limit <= 0 {
		limit = 100
	}
	node, scan, err := parseCursor(cursor)
	if err != nil {
		return nil, "", err
	}
	nodes := tb.s.nodes()
	var out []sticktable.Entry
	pattern := globEscape(tb.keyPrefix) + "*"
	for node < len(nodes) && len(out) < limit {
		c := nodes[node]
		res, err := tb.s.call(ctx, opScan, func(ctx context.Context, _ vk.Client) vk.ValkeyResult {
			return c.Do(ctx, c.B().Scan().Cursor(scan).Match(pattern).Count(scanCount).Build())
		})
		if err != nil {
			return nil, "", err
		}
		se, err := res.AsScanEntry()
		if err != nil {
			return nil, "", err
		}
		entries, err := tb.read(ctx, c, se.Elements)
		if err != nil {
			return nil, "", err
		}
		out = append(out, entries...)
		if scan = se.Cursor; scan == 0 {
			node++
		}
	}
	if node >= len(nodes) {
		return out, "", nil
	}
	return out, strconv.Itoa(node) + "-" + strconv.FormatUint(scan, 10), nil
}

// Get reads one entry as the store holds it (for the admin API), without
// touching the local table.
func (tb *Table) Get(ctx context.Context, k sticktable.Key) (sticktable.Entry, bool, error) {
	cp := tb.s.client.Load()
	if cp == nil {
		return sticktable.Entry{}, false, ErrUnavailable
	}
	entries, err := tb.read(ctx, *cp, []string{tb.redisKey(k)})
	if err != nil || len(entries) == 0 {
		return sticktable.Entry{}, false, err
	}
	return entries[0], true, nil
}

// read fetches values and TTLs of keys in one pipeline.
func (tb *Table) read(ctx context.Context, c vk.Client, keys []string) ([]sticktable.Entry, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	res, err := tb.s.callMulti(ctx, opScan, func(ctx context.Context, _ vk.Client) []vk.ValkeyResult {
		cmds := make(vk.Commands, 0, 2*len(keys))
		for _, k := range keys {
			cmds = append(cmds, c.B().Get().Key(k).Build(), c.B().Pttl().Key(k).Build())
		}
		return c.DoMulti(ctx, cmds...)
	})
	if err != nil {
		return nil, err
	}
	now := time.Now()
	out := make([]sticktable.Entry, 0, len(keys))
	for i, key := range keys {
		raw, err := res[2*i].ToString()
		if err != nil {
			continue // gone since the scan
		}
		v, ok := tb.decode(raw)
		if !ok {
			continue
		}
		k, err := tb.t.KeyFromBytes([]byte(strings.TrimPrefix(key, tb.keyPrefix)))
		if err != nil {
			tb.s.m.malformed.Inc()
			continue
		}
		e := sticktable.Entry{Key: k, Server: v.server, Version: v.version, Node: v.node}
		if ms, err := res[2*i+1].AsInt64(); err == nil && ms > 0 {
			e.ExpiresAt = now.Add(time.Duration(ms) * time.Millisecond)
		}
		out = append(out, e)
	}
	return out, nil
}

// scanKeys calls fn with every key of the table, a SCAN page at a time.
func (tb *Table) scanKeys(ctx context.Context, fn func(keys []string) error) error {
	pattern := globEscape(tb.keyPrefix) + "*"
	for _, c := range tb.s.nodes() {
		var cursor uint64
		for {
			res, err := tb.s.call(ctx, opScan, func(ctx context.Context, _ vk.Client) vk.ValkeyResult {
				return c.Do(ctx, c.B().Scan().Cursor(cursor).Match(pattern).Count(scanCount).Build())
			})
			if err != nil {
				return err
			}
			se, err := res.AsScanEntry()
			if err != nil {
				return err
			}
			if len(se.Elements) > 0 {
				if err := fn(se.Elements); err != nil {
					return err
				}
			}
			if cursor = se.Cursor; cursor == 0 {
				break
			}
		}
	}
	return nil
}

// nodes returns the server's nodes in a stable order: one for a
// standalone server, every node of a cluster.
func (s *Store) nodes() []vk.Client {
	cp := s.client.Load()
	if cp == nil {
		return nil
	}
	m := (*cp).Nodes()
	addrs := make([]string, 0, len(m))
	for a := range m {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	out := make([]vk.Client, len(addrs))
	for i, a := range addrs {
		out[i] = m[a]
	}
	return out
}

func parseCursor(c string) (node int, scan uint64, err error) {
	if c == "" {
		return 0, 0, nil
	}
	a, b, ok := strings.Cut(c, "-")
	if ok {
		node, err = strconv.Atoi(a)
		if err == nil {
			scan, err = strconv.ParseUint(b, 10, 64)
		}
	}
	if !ok || err != nil || node < 0 {
		return 0, 0, fmt.Errorf("valkey: invalid listing cursor %q", c)
	}
	return node, scan, nil
}

// globEscape quotes the characters SCAN MATCH treats specially.
func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

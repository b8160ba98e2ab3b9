package sticktable

import (
	"container/heap"
	"slices"
	"strings"
	"time"
)

// Servers lists the servers entries point at, with entry counts (expired
// entries not yet reclaimed included), sorted by name.
func (t *Table) Servers() []ServerEntries {
	counts := map[string]int{}
	t.eng.servers(counts)
	out := make([]ServerEntries, 0, len(counts))
	for s, n := range counts {
		out = append(out, ServerEntries{Server: s, Entries: n})
	}
	slices.SortFunc(out, func(a, b ServerEntries) int { return strings.Compare(a.Server, b.Server) })
	return out
}

// Range calls fn for every live entry until fn returns false, in no
// particular order. It holds a shard lock only while copying a small batch
// of entries, never while fn runs, so fn may use the table. Entries added
// or removed during the walk may or may not be seen, and an entry can be
// seen twice: removed and re-added, or moved when a burst of inserts
// forces its shard to be rebuilt during the walk (see walk).
func (t *Table) Range(fn func(Entry) bool) {
	t.eng.scan(t.now(), false, false, func(batch []Entry) bool {
		for _, e := range batch {
			if !fn(e) {
				return false
			}
		}
		return true
	})
}

// RangeChanges calls fn with a Change that recreates each entry (OpStore)
// and tombstone (OpDelete) through Apply, preceded by the Clear watermark
// if there is one: the table's replicable state, for anti-entropy and
// full syncs. Consistency is as for Range.
func (t *Table) RangeChanges(fn func(Change) bool) {
	if m := t.mark.Load(); m != nil && !fn(Change{Op: OpClear, Version: m.version, Node: m.node}) {
		return
	}
	now := t.now()
	t.eng.scan(now, true, false, func(batch []Entry) bool {
		for _, e := range batch {
			c := Change{Op: OpStore, Key: e.Key, Server: e.Server, Version: e.Version, Node: e.Node,
				Origin: e.Origin, TTL: time.Duration(e.ExpiresAt.UnixNano() - now)}
			if e.Deleted {
				c.Op = OpDelete
			}
			if !fn(c) {
				return false
			}
		}
		return true
	})
}

// Query selects entries for Entries, as the admin API's
// `?key=&server=&limit=&after=` does.
type Query struct {
	// Key, if set, selects the one entry with this key (any text that
	// parses to it).
	Key string
	// Server, if set, selects entries stuck to this server.
	Server string
	// After, if set, selects keys ordered after this key text: pass the
	// last key of one page to get the next.
	After string
	// Limit caps the number of entries returned; 0 means no limit.
	Limit int
}

// Entries returns live entries in key order (see Key.Compare) with
// filters and paging, and whether more entries follow. Without Key it
// walks the whole table as Range does but keeps only the Limit smallest
// keys, so a page costs O(n log limit) time and O(limit) memory. Key
// text that does not parse yields ErrInvalidKey (or ErrEmptyKey).
func (t *Table) Entries(q Query) ([]Entry, bool, error) {
	var after Key
	if q.After != "" {
		var err error
		if after, err = t.ParseKey(q.After); err != nil {
			return nil, false, err
		}
	}
	keep := func(e Entry) bool {
		return (q.Server == "" || e.Server == q.Server) && (after.IsZero() || e.Key.Compare(after) > 0)
	}
	if q.Key != "" {
		k, err := t.ParseKey(q.Key)
		if err != nil {
			return nil, false, err
		}
		if e, ok := t.GetKey(k); ok && keep(e) {
			return []Entry{e}, false, nil
		}
		return nil, false, nil
	}
	var h entryHeap
	t.Range(func(e Entry) bool {
		switch {
		case !keep(e):
		case q.Limit <= 0 || h.Len() <= q.Limit:
			heap.Push(&h, e)
		case e.Key.Compare(h[0].Key) < 0:
			h[0] = e
			heap.Fix(&h, 0)
		}
		return true
	})
	out := []Entry(h)
	slices.SortFunc(out, func(a, b Entry) int { return a.Key.Compare(b.Key) })
	// A key removed and re-added during the walk can be seen twice.
	out = slices.CompactFunc(out, func(a, b Entry) bool { return a.Key == b.Key })
	more := false
	if q.Limit > 0 && len(out) > q.Limit {
		out, more = out[:q.Limit], true
	}
	return out, more, nil
}

// entryHeap is a max-heap by key, holding the smallest keys seen so far.
type entryHeap []Entry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].Key.Compare(h[j].Key) > 0 }
func (h entryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *entryHeap) Push(x any)        { *h = append(*h, x.(Entry)) }
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

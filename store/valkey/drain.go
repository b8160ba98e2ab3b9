package valkey

import (
	"context"
	"sort"

	vk "github.com/valkey-io/valkey-go"
	"go.uber.org/zap"
)

// Drain state is the set <prefix>_sticky_drain of server identities. A
// change made through any instance reaches every other one through the
// same invalidation feed as entries: each instance then reads the whole
// set again and passes it to the functions given to OnDrainChange.

func (s *Store) drainKey() string { return s.cfg.Prefix + drainKeySuffix }

// Drain marks server as drained in the store.
func (s *Store) Drain(ctx context.Context, server string) error {
	return s.drainOp(ctx, server, true)
}

// Undrain clears server's drained mark in the store.
func (s *Store) Undrain(ctx context.Context, server string) error {
	return s.drainOp(ctx, server, false)
}

func (s *Store) drainOp(ctx context.Context, server string, on bool) error {
	key := s.drainKey()
	_, err := s.call(ctx, opDrain, func(ctx context.Context, c vk.Client) vk.ValkeyResult {
		if on {
			return c.Do(ctx, c.B().Sadd().Key(key).Member(server).Build())
		}
		return c.Do(ctx, c.B().Srem().Key(key).Member(server).Build())
	})
	if err == nil {
		// NOLOOP keeps our own change from coming back: tell our own
		// listeners too, so every instance learns it the same way. Done
		// before returning, after any reload already under way (reloads
		// run one at a time): a reload that read the set before this
		// write would otherwise hand it over after the caller's own
		// change and undo it until the next change.
		s.reloadDrain()
	}
	return err
}

// Drained lists the drained servers, sorted.
func (s *Store) Drained(ctx context.Context) ([]string, error) {
	key := s.drainKey()
	res, err := s.call(ctx, opDrain, func(ctx context.Context, c vk.Client) vk.ValkeyResult {
		return c.Do(ctx, c.B().Smembers().Key(key).Build())
	})
	if err != nil {
		return nil, err
	}
	list, err := res.AsStrSlice()
	if err != nil {
		return nil, err
	}
	sort.Strings(list)
	return list, nil
}

// OnDrainChange registers fn to receive the whole drained set whenever it
// changes through any instance (and after the store comes back, when a
// change may have been missed). fn runs on a background goroutine; calls
// do not overlap with each other only if fn is registered once.
func (s *Store) OnDrainChange(fn func(servers []string)) {
	if fn == nil {
		return
	}
	s.mu.Lock()
	s.drainFns = append(s.drainFns, fn)
	s.mu.Unlock()
}

// ReloadDrain reads the drained set in the background and passes it to
// the OnDrainChange functions (a config that starts using the store calls
// it once).
func (s *Store) ReloadDrain() { s.enqueue(job{kind: jobDrain}) }

func (s *Store) reloadDrain() {
	s.mu.RLock()
	fns := s.drainFns
	s.mu.RUnlock()
	if len(fns) == 0 {
		return
	}
	// Reloads run on any worker: one at a time, read and hand over
	// together, so the last set handed over is the last one read, never an
	// older read that finished late.
	s.drainMu.Lock()
	defer s.drainMu.Unlock()
	list, err := s.Drained(background())
	if err != nil {
		s.logger.Debug("reading drained servers from the store", zap.String("store", s.name), zap.Error(err))
		return
	}
	for _, fn := range fns {
		fn(list)
	}
}

package haproxycookie

import "time"

// MaxFutureSkew is how far in the future a date may be before the cookie is
// rejected. HAProxy tolerates a day so that an administrator can fix a clock
// or timezone mistake without expiring every client, while bounding how long
// a bogus date can pin a client.
const MaxFutureSkew = 24 * time.Hour

// Verdict is the outcome of checking a cookie's dates.
type Verdict uint8

const (
	// Valid means the dates allow the cookie to be used.
	Valid Verdict = iota
	// ExpiredIdle means the last-seen date is older than maxidle
	// (HAProxy logs 'E').
	ExpiredIdle
	// ExpiredLife means the first-seen date is older than maxlife
	// (HAProxy logs 'O').
	ExpiredLife
	// FutureDated means a checked date lies more than MaxFutureSkew
	// ahead. HAProxy logs it as 'O' for the first-seen date and 'E' for
	// the last-seen date.
	FutureDated
)

// String returns a short lowercase name for v.
func (v Verdict) String() string {
	switch v {
	case Valid:
		return "valid"
	case ExpiredIdle:
		return "expired-idle"
	case ExpiredLife:
		return "expired-life"
	case FutureDated:
		return "future-dated"
	}
	return "unknown"
}

// Check applies HAProxy's date rules to a parsed cookie at time now, for a
// backend configured with maxIdle/maxLife (0 or negative means not
// configured). A cookie whose verdict is not Valid must be treated as absent.
//
// Rules (http_manage_client_side_cookies), in whole seconds, with dates
// decoded to their 4-second multiple:
//
//   - with maxLife and a first-seen date: now-first > maxLife gives
//     ExpiredLife, first-now > 24h gives FutureDated; this is checked first;
//   - then, with maxIdle and a last-seen date: now-last > maxIdle gives
//     ExpiredIdle, last-now > 24h gives FutureDated;
//   - a missing date is never a reason to reject: HAProxy accepts the
//     cookie and adds the date in its response; a date whose limit is not
//     configured is not checked at all, not even for being in the future.
//
// The comparisons are strict, so a cookie exactly maxIdle old is still valid.
// Durations are truncated to whole seconds, like HAProxy's configuration.
//
// refresh reports whether the response must carry a Set-Cookie even if the
// request goes to the server the cookie names. For a Valid cookie that is
// when (HAProxy's insertion condition):
//
//   - dates are in use (maxIdle configured or a last-seen date present) and
//     the last-seen date is absent or strictly before now;
//   - maxLife is configured and the first-seen date is absent (to add it);
//   - maxLife is not configured and a first-seen date is present (to drop it).
//
// Because dates are stored rounded up to 4 seconds, this rewrites the cookie
// at most once per 4-second period per client, not on every response; HAProxy
// has no larger hysteresis (it does not wait for a fraction of maxidle). For
// any other verdict refresh is true: a new cookie must be issued.
//
// Differences are computed modulo 2^32 seconds, as HAProxy's 32-bit
// arithmetic does, so the 2106 wrap of the 30-bit date field is handled.
// HAProxy 2.6 on a 64-bit host refreshes on every request once dates pass
// 2038 (a signed overflow in its comparison, observed under faketime); that
// is a bug and is deliberately not reproduced.
func Check(p Parsed, now time.Time, maxIdle, maxLife time.Duration) (v Verdict, refresh bool) {
	nowSec := now.Unix()
	hasLast, hasFirst := !p.LastSeen.IsZero(), !p.FirstSeen.IsZero()
	const skew = int64(MaxFutureSkew / time.Second)

	if maxLife > 0 && hasFirst {
		first := p.FirstSeen.Unix()
		if secondsBetween(first, nowSec) > int64(maxLife/time.Second) {
			return ExpiredLife, true
		}
		if secondsBetween(nowSec, first) > skew {
			return FutureDated, true
		}
	}
	if maxIdle > 0 && hasLast {
		last := p.LastSeen.Unix()
		if secondsBetween(last, nowSec) > int64(maxIdle/time.Second) {
			return ExpiredIdle, true
		}
		if secondsBetween(nowSec, last) > skew {
			return FutureDated, true
		}
	}

	refresh = ((maxIdle > 0 || hasLast) && (!hasLast || secondsBetween(nowSec, p.LastSeen.Unix()) < 0)) ||
		(maxLife > 0 && !hasFirst) ||
		(maxLife <= 0 && hasFirst)
	return Valid, refresh
}

// secondsBetween returns to-from as HAProxy computes it: the difference
// truncated to 32 bits and read as signed.
func secondsBetween(from, to int64) int64 {
	return int64(int32(uint32(to) - uint32(from)))
}

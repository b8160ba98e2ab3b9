//go:build !race

package haproxycookie

const raceEnabled = false

package selection

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// builtinCookieValue is the value Caddy's cookie policy gives an upstream,
// so benchmarks can present valid cookies to it.
func builtinCookieValue(secret, dial string) string {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(dial))
	return hex.EncodeToString(h.Sum(nil))
}

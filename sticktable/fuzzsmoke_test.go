package sticktable

import (
	"testing"
	"time"

	"github.com/caddy-sticky/sticky/internal/fuzzsmoke"
)

func TestFuzzTargetsBriefly(t *testing.T) {
	fuzzsmoke.Run(t, 10*time.Second, "FuzzReadSnapshot", "FuzzParseKey", "FuzzMerge")
}

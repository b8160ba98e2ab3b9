package sticky

import (
	"os"
	"strconv"
)

func itoa(i int) string { return strconv.Itoa(i) }

func readFileIfExists(path string) ([]byte, error) { return os.ReadFile(path) }

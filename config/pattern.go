package config

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// checkPattern validates one route match pattern: an exact name, a
// "*.suffix" wildcard, or a "~regex".
func checkPattern(p string) error {
	switch {
	case p == "":
		return errors.New("empty pattern")
	case strings.HasPrefix(p, "~"):
		if _, err := regexp.Compile(p[1:]); err != nil {
			return fmt.Errorf("%q: %w", p, err)
		}
		return nil
	case strings.ContainsAny(p, " \t\r\n"):
		return fmt.Errorf("%q contains white space", p)
	case strings.HasPrefix(p, "*."):
		if rest := strings.TrimSuffix(p[2:], "."); rest == "" || strings.Contains(rest, "*") {
			return fmt.Errorf("%q: a wildcard is one leading *. before a name", p)
		}
		return nil
	case strings.Contains(p, "*"):
		return fmt.Errorf("%q: a wildcard is one leading *. before a name", p)
	}
	return nil
}

// canonicalPattern is the form two patterns share when they match the same
// names: names compare case-insensitively and ignore a trailing dot.
func canonicalPattern(p string) string {
	if strings.HasPrefix(p, "~") {
		return p
	}
	return strings.TrimSuffix(strings.ToLower(p), ".")
}

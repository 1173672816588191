package nft

import (
	"regexp"
	"slices"
	"strings"
)

var (
	counterValues = regexp.MustCompile(`counter packets \d+ bytes \d+`)
	elementList   = regexp.MustCompile(`elements = \{ [^}]* \}`)
	iptablesNote  = regexp.MustCompile(`(?m)^# Warning: table .* is managed by iptables-nft.*\n`)
	xtTarget      = regexp.MustCompile(`(?m)counter $`)
)

// Canonical rewrites `nft list table inet falg` output, or String's, into
// one form so the two can be compared: counter values and nft's note on xt
// users go, set elements are sorted, and an xt NFQUEUE target, which nft
// cannot print in an inet table (it prints nothing there), is shown as the
// queue statement it stands for.
func (r *Ruleset) Canonical(listing string) string {
	s := counterValues.ReplaceAllString(listing, "counter")
	s = iptablesNote.ReplaceAllString(s, "")
	q := r.text(rule{queue: true})
	s = xtTarget.ReplaceAllString(s, q)
	return elementList.ReplaceAllStringFunc(s, func(block string) string {
		inner := strings.TrimSuffix(strings.TrimPrefix(block, "elements = { "), " }")
		elems := strings.Split(inner, ",\n\t\t\t     ")
		slices.Sort(elems)
		return "elements = { " + strings.Join(elems, ",\n\t\t\t     ") + " }"
	})
}

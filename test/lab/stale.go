package lab

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// markerDir holds one marker file per live lab: "<pid> <start time>\n".
const markerDir = "/run/falg-lab"

// writeMarker records that this process owns lab id.
func writeMarker(id string) (string, error) {
	start, err := startTime(os.Getpid())
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if err := os.MkdirAll(markerDir, 0o755); err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	path := filepath.Join(markerDir, id)
	if err := os.WriteFile(path, fmt.Appendf(nil, "%d %d\n", os.Getpid(), start), 0o644); err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return path, nil
}

func removeMarker(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// startTime returns a process's start time in clock ticks since boot, field
// 22 of /proc/PID/stat; with the pid it names a process despite pid reuse.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// markerAlive reports whether the process named by a marker file still runs.
func markerAlive(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var pid int
	var start uint64
	if _, err := fmt.Sscanf(string(b), "%d %d", &pid, &start); err != nil {
		return false
	}
	now, err := startTime(pid)
	return err == nil && now == start
}

// CleanupStale removes labs with the given prefix whose creating process is
// gone (killed before Close ran): it kills the processes left inside their
// namespaces, deletes the namespaces and the marker files. Labs of live
// processes are left alone. It returns the namespace names it deleted.
func CleanupStale(prefix string) ([]string, error) {
	if !prefixRE.MatchString(prefix) {
		return nil, fmt.Errorf("lab: cleanup: bad prefix %q", prefix)
	}
	re := regexp.MustCompile(`^(` + regexp.QuoteMeta(prefix) + `-[0-9a-f]{8})(-|$)`)
	stale := map[string][]string{} // lab id -> namespace names
	if ents, err := os.ReadDir(markerDir); err == nil {
		for _, e := range ents {
			if m := re.FindStringSubmatch(e.Name()); m != nil && m[2] == "" {
				stale[m[1]] = nil
			}
		}
	}
	if ents, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range ents {
			if m := re.FindStringSubmatch(e.Name()); m != nil && m[2] == "-" {
				stale[m[1]] = append(stale[m[1]], e.Name())
			}
		}
	}
	var ids []string
	for id := range stale {
		// The marker is written before any namespace and removed after
		// all of them, so namespaces without a marker are stale too.
		if markerAlive(filepath.Join(markerDir, id)) {
			continue
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var names []string
	for _, id := range ids {
		names = append(names, stale[id]...)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	var errs []error
	if len(names) > 0 {
		ip, err := ipPath()
		if err != nil {
			return nil, err
		}
		errs = append(errs, killInside(nsIDs(names)), deleteNamespaces(ip, names))
	}
	for _, id := range ids {
		errs = append(errs, removeMarker(filepath.Join(markerDir, id)))
	}
	if err := errors.Join(errs...); err != nil {
		return names, fmt.Errorf("lab: cleanup %s: %w", prefix, err)
	}
	return names, nil
}

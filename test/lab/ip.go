package lab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// netnsDir is where `ip netns` keeps named namespaces.
const netnsDir = "/run/netns"

// ipPath finds the iproute2 binary.
func ipPath() (string, error) {
	p, err := exec.LookPath("ip")
	if err != nil {
		return "", fmt.Errorf("%w: %w (install iproute2)", ErrUnavailable, err)
	}
	return p, nil
}

// batch runs lines through `ip [-n ns] -force -b -`. With -force ip carries
// on after a failing line and exits non-zero, so one stale entry does not
// stop the rest of a teardown.
func batch(ctx context.Context, ip, ns string, lines []string) error {
	var args []string
	if ns != "" {
		args = append(args, "-n", ns)
	}
	args = append(args, "-force", "-b", "-")
	cmd := exec.CommandContext(ctx, ip, args...)
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		where := "ip"
		if ns != "" {
			where = "ip -n " + ns
		}
		return fmt.Errorf("%s -b: %w: %s", where, err, bytes.TrimSpace(out))
	}
	return nil
}

// deleteNamespaces deletes the named namespaces that still exist.
func deleteNamespaces(ip string, names []string) error {
	var lines []string
	for _, n := range names {
		if _, err := os.Lstat(filepath.Join(netnsDir, n)); err == nil {
			lines = append(lines, "netns del "+n)
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return batch(context.Background(), ip, "", lines)
}

// nsID identifies a network namespace by the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

func statNS(path string) (nsID, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nsID{}, false
	}
	return nsID{uint64(st.Dev), st.Ino}, true
}

// nsIDs returns the identities of the named namespaces that exist.
func nsIDs(names []string) map[nsID]bool {
	ids := make(map[nsID]bool, len(names))
	for _, n := range names {
		if id, ok := statNS(filepath.Join(netnsDir, n)); ok {
			ids[id] = true
		}
	}
	return ids
}

// killInside sends SIGKILL to every process, other than this one, whose
// network namespace is in want, so that deleting the names also frees the
// namespaces.
func killInside(want map[nsID]bool) error {
	if len(want) == 0 {
		return nil
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("scan /proc: %w", err)
	}
	self := os.Getpid()
	var errs []error
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid <= 1 {
			continue
		}
		id, ok := statNS("/proc/" + e.Name() + "/ns/net")
		if !ok || !want[id] {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			errs = append(errs, fmt.Errorf("kill %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

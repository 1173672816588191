package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// build creates the namespaces, links, addresses and routes. It runs four
// kinds of batches: namespaces (one ip process), sysctls (in-process through
// Do), links (one ip process, every veth created directly inside its
// namespaces) and per-namespace configuration (one ip process per namespace,
// run concurrently).
func (l *Lab) build(ctx context.Context) error {
	all := l.Namespaces()
	lines := make([]string, 0, len(all))
	for _, n := range all {
		lines = append(lines, "netns add "+n.Name)
	}
	if err := batch(ctx, l.ip, "", lines); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	// Sysctls go first: interfaces created later copy the "default" values.
	for _, n := range all {
		if err := n.Do(func() error { return setSysctls(n == l.Router) }); err != nil {
			return fmt.Errorf("lab: sysctl %s: %w", n.Name, err)
		}
	}
	r := l.Router.Name
	lines = []string{
		fmt.Sprintf("link add %s netns %s type bridge mcast_snooping 0", ClientBridge, r),
		fmt.Sprintf("link add %s netns %s type bridge mcast_snooping 0", BackendBridge, r),
	}
	hosts := append(append([]*NS{}, l.Clients...), l.Backends...)
	for _, h := range hosts {
		lines = append(lines, fmt.Sprintf("link add %s netns %s type veth peer name %s netns %s", h.port, r, HostDev, h.Name))
	}
	if err := batch(ctx, l.ip, "", lines); err != nil {
		return fmt.Errorf("lab: links: %w", err)
	}

	rt := l.Router
	router := []string{
		"link set lo up",
		"link set " + ClientBridge + " up",
		"link set " + BackendBridge + " up",
	}
	for _, h := range hosts {
		router = append(router, fmt.Sprintf("link set %s master %s up", h.port, h.bridge))
	}
	router = append(router, neighRetrans(ClientBridge)...)
	router = append(router, neighRetrans(BackendBridge)...)
	router = append(router,
		fmt.Sprintf("addr add %s/24 dev %s", rt.ClientSide4, ClientBridge),
		fmt.Sprintf("addr add %s/64 dev %s nodad", rt.ClientSide6, ClientBridge),
		fmt.Sprintf("addr add %s/24 dev %s", rt.BackendSide4, BackendBridge),
		fmt.Sprintf("addr add %s/64 dev %s nodad", rt.BackendSide6, BackendBridge),
	)
	jobs := map[string][]string{rt.Name: router}
	for _, h := range hosts {
		jobs[h.Name] = []string{
			"link set lo up",
			neighRetrans(HostDev)[0],
			neighRetrans(HostDev)[1],
			"link set " + HostDev + " up",
			fmt.Sprintf("addr add %s/24 dev %s", h.Addr4, HostDev),
			fmt.Sprintf("addr add %s/64 dev %s nodad", h.Addr6, HostDev),
			fmt.Sprintf("route add default via %s dev %s", h.Gateway4, HostDev),
			fmt.Sprintf("route add default via %s dev %s", h.Gateway6, HostDev),
		}
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for ns, lines := range jobs {
		wg.Go(func() {
			if err := batch(ctx, l.ip, ns, lines); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab: configure: %w", err)
	}
	return nil
}

// neighRetrans returns batch lines that make ARP and neighbour discovery on
// dev retransmit after 100 ms instead of 1 s. Right after setup the kernel
// may still be processing the carrier change (linkwatch, delayed under load
// and by the teardown of earlier namespaces), and IPv6 joins the
// solicited-node groups only then, so the first solicitation can be lost;
// with the default 1 s retransmit that cost a second in about one lab out
// of forty.
func neighRetrans(dev string) []string {
	return []string{
		"ntable change name arp_cache dev " + dev + " retrans 100",
		"ntable change name ndisc_cache dev " + dev + " retrans 100",
	}
}

// sysctl is one setting; optional ones may be absent from this kernel.
type sysctl struct {
	key, val string
	optional bool
}

// hostSysctls apply in every namespace.
var hostSysctls = []sysctl{
	{key: "net/ipv6/conf/all/disable_ipv6", val: "0"},
	{key: "net/ipv6/conf/default/disable_ipv6", val: "0"},
	// No duplicate address detection: link-local addresses are usable at
	// once too (global ones are added with nodad).
	{key: "net/ipv6/conf/all/accept_dad", val: "0"},
	{key: "net/ipv6/conf/default/accept_dad", val: "0"},
}

// routerSysctls apply in the router namespace only.
var routerSysctls = []sysctl{
	{key: "net/ipv4/ip_forward", val: "1"},
	{key: "net/ipv6/conf/all/forwarding", val: "1"},
	{key: "net/ipv6/conf/default/forwarding", val: "1"},
	// Reverse-path filtering off: falg injects packets with the source
	// address of another host (a SYN-ACK from the backend's address toward
	// the client, a SYN from the client's address toward the backend), and
	// the effective rp_filter is max(all, interface).
	{key: "net/ipv4/conf/all/rp_filter", val: "0"},
	{key: "net/ipv4/conf/default/rp_filter", val: "0"},
	// Frames bridged between two hosts of one segment are not router
	// traffic; keep them out of the router's IP hooks (and falg's rules).
	{key: "net/bridge/bridge-nf-call-iptables", val: "0", optional: true},
	{key: "net/bridge/bridge-nf-call-ip6tables", val: "0", optional: true},
	{key: "net/bridge/bridge-nf-call-arptables", val: "0", optional: true},
}

// setSysctls writes the settings through /proc/sys, which shows the network
// namespace of the writing thread: call it inside Do.
func setSysctls(router bool) error {
	set := hostSysctls
	if router {
		set = append(append([]sysctl{}, hostSysctls...), routerSysctls...)
	}
	for _, s := range set {
		err := os.WriteFile(filepath.Join("/proc/sys", s.key), []byte(s.val), 0o644)
		if err != nil && !(s.optional && errors.Is(err, os.ErrNotExist)) {
			return fmt.Errorf("%s=%s: %w", s.key, s.val, err)
		}
	}
	return nil
}

package lab

import (
	"fmt"
	"net/netip"
)

// Interface names inside the lab.
const (
	// ClientBridge is the router's bridge toward the clients.
	ClientBridge = "cbr"
	// BackendBridge is the router's bridge toward the backends.
	BackendBridge = "bbr"
	// HostDev is the interface of every client and backend.
	HostDev = "eth0"
)

// The lab's segments.
var (
	// ClientNet4 is the IPv4 client segment.
	ClientNet4 = netip.MustParsePrefix("10.0.0.0/24")
	// ClientNet6 is the IPv6 client segment.
	ClientNet6 = netip.MustParsePrefix("fd00::/64")
	// BackendNet4 is the IPv4 backend segment.
	BackendNet4 = netip.MustParsePrefix("10.0.1.0/24")
	// BackendNet6 is the IPv6 backend segment.
	BackendNet6 = netip.MustParsePrefix("fd00:1::/64")
)

// maxHosts bounds clients and backends so every address fits its /24.
const maxHosts = 200

// hostAddr returns the address with host part n in segment p.
func hostAddr(p netip.Prefix, n int) netip.Addr {
	b := p.Addr().AsSlice()
	b[len(b)-1] += byte(n)
	a, _ := netip.AddrFromSlice(b)
	return a
}

// plan fills in the names and addresses of every namespace of a lab.
func plan(base string, clients, backends int) (router *NS, cs, bs []*NS) {
	router = &NS{
		Name:         base + "-router",
		ClientSide4:  hostAddr(ClientNet4, 1),
		ClientSide6:  hostAddr(ClientNet6, 1),
		BackendSide4: hostAddr(BackendNet4, 1),
		BackendSide6: hostAddr(BackendNet6, 1),
	}
	router.Addr4, router.Addr6 = router.ClientSide4, router.ClientSide6
	for i := range clients {
		cs = append(cs, &NS{
			Name:     fmt.Sprintf("%s-client%d", base, i),
			Addr4:    hostAddr(ClientNet4, 2+i),
			Addr6:    hostAddr(ClientNet6, 2+i),
			Gateway4: router.ClientSide4,
			Gateway6: router.ClientSide6,
			port:     fmt.Sprintf("c%d", i),
			bridge:   ClientBridge,
		})
	}
	for i := range backends {
		bs = append(bs, &NS{
			Name:     fmt.Sprintf("%s-backend%d", base, i),
			Addr4:    hostAddr(BackendNet4, 2+i),
			Addr6:    hostAddr(BackendNet6, 2+i),
			Gateway4: router.BackendSide4,
			Gateway6: router.BackendSide6,
			port:     fmt.Sprintf("b%d", i),
			bridge:   BackendBridge,
		})
	}
	return router, cs, bs
}

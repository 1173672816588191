module falg

go 1.26

require (
	github.com/florianl/go-nflog/v2 v2.2.0
	github.com/google/nftables v0.3.0
	github.com/gopacket/gopacket v1.4.0
	golang.org/x/sys v0.43.0
)

require (
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/mdlayher/netlink v1.11.2 // indirect
	github.com/mdlayher/socket v0.6.0 // indirect
	github.com/vishvananda/netns v0.0.5 // indirect
	golang.org/x/net v0.53.0 // indirect
	golang.org/x/sync v0.20.0 // indirect
)

// Package nft builds, prints and installs falg's nftables ruleset.
package nft

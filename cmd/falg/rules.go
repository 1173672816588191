package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"falg/nft"
)

func newRulesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rules",
		Short: "Print, as nft -f input, the ruleset falg run would install; change nothing",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.load()
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), nft.New(c))
			return nil
		},
	}
}

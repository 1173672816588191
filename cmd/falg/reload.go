package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/spf13/cobra"
)

func newReloadCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Make the running falg read its configuration again (as SIGHUP does)",
		Long: `reload asks the running falg, through its admin socket, to read its
configuration file again. A valid one replaces the routes and the ruleset
at once: new flows follow it, flows in setup finish with the routes they
started with, spliced flows are untouched. An invalid one is refused, the
running configuration stays, and reload prints why and exits 1.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.load()
			if err != nil {
				return err
			}
			resp, err := adminClient(c.Admin).Post("http://falg/reload", "text/plain", nil)
			if err != nil {
				return fmt.Errorf("reload: %w", err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("reload refused:\n%s", strings.TrimSpace(string(body)))
			}
			fmt.Fprint(cmd.OutOrStdout(), string(body))
			return nil
		},
	}
}

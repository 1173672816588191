package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"falg/config"
)

// globals are the flags every command shares.
type globals struct {
	config    string
	logLevel  string
	logFormat string
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "falg",
		Short:         "Route each new connection by its first bytes, then let the kernel forward it",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVarP(&g.config, "config", "c", "/etc/falg/falg.yaml", "configuration file")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "debug, info, warn or error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "text or json")
	root.AddCommand(
		newRunCmd(g),
		newRulesCmd(g),
		newCheckCmd(g),
		newDumpCmd(g),
		newFlowsCmd(g),
		newReloadCmd(g),
		newDemoCmd(),
		newVersionCmd(),
	)
	return root
}

// logger builds the slog logger the flags ask for.
func (g *globals) logger() (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch g.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", g.logFormat)
}

func (g *globals) load() (*config.Config, error) {
	return config.Load(g.config)
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print falg's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "falg", version)
		},
	}
}

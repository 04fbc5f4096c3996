package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/berthrun/berth/internal/auth"
	"github.com/berthrun/berth/internal/server"
)

// keysCommand manages a server's access keys in its data directory; a
// running server sees changes on its next request.
func keysCommand() *cobra.Command {
	var dataDir string
	open := func() (*auth.Keys, error) {
		if _, err := os.Stat(server.KeysFile(dataDir)); err != nil {
			return nil, fmt.Errorf("no keys in %s: start the server once first (%w)", dataDir, err)
		}
		return auth.OpenKeys(server.KeysFile(dataDir))
	}
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage the access keys a Berth server accepts",
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", envOr("BERTH_DATA_DIR", server.DefaultDataDir()), "the server's data directory (env BERTH_DATA_DIR)")

	var role string
	var runtimes []string
	var forUsers bool
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a key and print it (its secret is shown only now)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keys, err := open()
			if err != nil {
				return err
			}
			k, err := keys.Create(role, runtimes, forUsers)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "AWS_ACCESS_KEY_ID=%s\nAWS_SECRET_ACCESS_KEY=%s\n", k.ID, k.Secret)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", auth.RoleAdmin, "admin (every call) or invoke (InvokeAgentRuntime and StopRuntimeSession only)")
	create.Flags().StringSliceVar(&runtimes, "runtime", nil, "limit an invoke key to these runtime IDs (repeatable)")
	create.Flags().BoolVar(&forUsers, "for-users", false, "let the key name a runtimeUserId (InvokeAgentRuntimeForUser)")

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the keys (without their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			keys, err := open()
			if err != nil {
				return err
			}
			all, err := keys.List()
			if err != nil {
				return err
			}
			for i := range all {
				all[i].Secret = ""
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(all)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tROLE\tRUNTIMES\tFOR USERS\tCREATED\tREVOKED")
			for _, k := range all {
				fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\t%v\n", k.ID, k.Role, k.Runtimes, k.ActForUsers, k.Created.Format("2006-01-02 15:04"), k.Revoked)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a key; calls signed with it are refused from then on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			keys, err := open()
			if err != nil {
				return err
			}
			return keys.Revoke(args[0])
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

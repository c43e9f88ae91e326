package main

import (
	"bufio"
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/llmproxy-go/llmproxy/controlplane/apikey"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

func newKeyCommand(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key create|revoke|rotate|hash ...",
		Short: "Make, revoke and rotate consumers' API keys; hash a key for a config file",
		Long: `The control plane makes a key, answers it once and stores only its SHA-256: print it to
where it goes, nothing can show it again. Revoking or rotating a key is a new revision;
with --wait the answer says which proxies have applied it (and so refuse the old key).`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("key needs an action: create, revoke, rotate or hash")
			}
			return usagef("key: unknown action %q (want create, revoke, rotate or hash)", args[0])
		},
	}

	create := &cobra.Command{
		Use:   "create CONSUMER",
		Short: "Make a new key for CONSUMER and print it (shown only this once)",
		Example: `  llmproxyctl key create team-search
  llmproxyctl key create team-search --id ci --expires-in 720h -o json`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeConsumer(1),
	}
	var (
		id, expiresAt string
		expiresIn     time.Duration
	)
	create.Flags().StringVar(&id, "id", "", "the key's `ID` within its consumer (default: generated)")
	create.Flags().StringVar(&expiresAt, "expires-at", "", "RFC 3339 `TIME` after which the key is refused")
	create.Flags().DurationVar(&expiresIn, "expires-in", 0, "refuse the key after this `DURATION` (instead of --expires-at)")
	createOpts := addWriteFlags(c, create)
	create.RunE = func(cmd *cobra.Command, args []string) error {
		switch {
		case expiresIn < 0:
			return usagef("--expires-in: want a positive duration such as 720h")
		case expiresIn > 0 && expiresAt != "":
			return usagef("--expires-at and --expires-in exclude each other")
		case expiresIn > 0:
			expiresAt = time.Now().Add(expiresIn).UTC().Truncate(time.Second).Format(time.RFC3339)
		}
		resp, err := send(createOpts, adminv1.AdminServiceClient.CreateKey,
			&adminv1.CreateKeyRequest{Name: args[0], Key: &adminv1.NewKey{Id: id, ExpiresAt: expiresAt}})
		if err != nil {
			return err
		}
		return c.finishWrite(createOpts, resp, keyMade(resp, "created"))
	}

	revoke := &cobra.Command{
		Use:               "revoke CONSUMER ID",
		Short:             "Revoke the key ID of CONSUMER: proxies refuse it once they applied the revision",
		Example:           `  llmproxyctl key revoke team-search k1a2b3c4d -m "leaked in a log" --wait`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeKey(),
	}
	revokeOpts := addWriteFlags(c, revoke)
	revoke.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := send(revokeOpts, adminv1.AdminServiceClient.RevokeKey, &adminv1.RevokeKeyRequest{Name: args[0], Id: args[1]})
		if err != nil {
			return err
		}
		return c.finishWrite(revokeOpts, resp, fmt.Sprintf("key %q of consumer %q revoked (revision %d)", args[1], args[0], resp.GetRevision()))
	}

	rotate := &cobra.Command{
		Use:   "rotate CONSUMER ID",
		Short: "Make a new key for CONSUMER and let the key ID expire after --grace",
		Long: `Make a new key for CONSUMER (printed only this once) and give the key ID an expiry of now
plus --grace, never later than one it has. Both keys work during the grace period, only the
new one after. Without --grace the old key is revoked at once.`,
		Example:           `  llmproxyctl key rotate team-search k1a2b3c4d --grace 24h`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: c.completeKey(),
	}
	var (
		grace time.Duration
		newID string
	)
	rotate.Flags().DurationVar(&grace, "grace", 0, "how long the old key keeps working (`DURATION`; 0: revoke it now)")
	rotate.Flags().StringVar(&newID, "new-id", "", "the new key's `ID` (default: generated)")
	rotateOpts := addWriteFlags(c, rotate)
	rotate.RunE = func(cmd *cobra.Command, args []string) error {
		if grace < 0 {
			return usagef("--grace: want a positive duration such as 24h")
		}
		rot := &adminv1.KeyRotation{NewId: newID}
		if grace > 0 {
			rot.Grace = grace.String()
		}
		resp, err := send(rotateOpts, adminv1.AdminServiceClient.RotateKey, &adminv1.RotateKeyRequest{Name: args[0], Id: args[1], Rotation: rot})
		if err != nil {
			return err
		}
		verb := fmt.Sprintf("created to replace key %q, which works for %s more", args[1], grace)
		if grace == 0 {
			verb = fmt.Sprintf("created to replace key %q, which is revoked", args[1])
		}
		return c.finishWrite(rotateOpts, resp, keyMade(resp, verb))
	}

	hash := &cobra.Command{
		Use:   "hash [KEY]",
		Short: "Print the sha256 hash of a key, for consumers[].keys[].hash of a config file",
		Long: `Print "sha256:" and the hex SHA-256 of KEY, which is what a config file stores. Without KEY
it reads one line from stdin, which keeps the key out of the shell's history. --new makes a
new key first and prints both. Nothing is sent anywhere.`,
		Example: `  llmproxyctl key hash --new
  printf '%s' "$KEY" | llmproxyctl key hash`,
		Args: cobra.RangeArgs(0, 1),
	}
	var makeNew bool
	hash.Flags().BoolVar(&makeNew, "new", false, "make a new key and print it with its hash")
	hash.RunE = func(cmd *cobra.Command, args []string) error {
		switch {
		case makeNew && len(args) > 0:
			return usagef("--new makes a key: give no KEY")
		case makeNew:
			key := apikey.New()
			fmt.Fprintf(c.stdout, "key:  %s\nhash: %s\n", key, apikey.Hash(key))
			return nil
		}
		var key string
		if len(args) == 1 {
			key = args[0]
		} else {
			line, err := bufio.NewReader(c.stdin).ReadString('\n')
			if err != nil && line == "" {
				return usagef("key hash: give KEY or one line on stdin")
			}
			key = strings.TrimRight(line, "\r\n")
		}
		if key == "" {
			return usagef("key hash: the key is empty")
		}
		fmt.Fprintln(c.stdout, apikey.Hash(key))
		return nil
	}
	cmd.AddCommand(create, revoke, rotate, hash)
	return cmd
}

// keyMade is the text answer of a write that made a key: what happened, then the key alone
// on the last line so that a script can take it (tail -n 1).
func keyMade(resp *adminv1.KeyResponse, what string) string {
	return fmt.Sprintf("key %q of consumer %q %s (revision %d); it is shown only this once:\n%s",
		resp.GetId(), resp.GetConsumer().GetName(), what, resp.GetRevision(), resp.GetKey())
}

// completeKey completes CONSUMER ID from the control plane.
func (c *cli) completeKey() cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		switch len(args) {
		case 0:
			return c.completeConsumer(1)(cmd, args, toComplete)
		case 1:
			list := func(ctx context.Context, client adminv1.AdminServiceClient) ([]string, error) {
				cs, err := client.GetConsumer(ctx, &adminv1.GetConsumerRequest{Name: args[0]})
				var ids []string
				for _, k := range cs.GetKeys() {
					ids = append(ids, k.GetId())
				}
				return ids, err
			}
			return c.completeFromServer(list, toComplete)
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

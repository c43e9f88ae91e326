package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

func newConsumerCommand(c *cli) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "consumer create|get|delete ...",
		Short: "Create, print or delete consumers (clients known by their API keys)",
		Long: `A consumer is a client of the gateway, known by its API keys, with the models and forwards
it may use, its limits and its budget. Forwards with client_auth optional or required
identify consumers by their keys; "llmproxyctl key" makes and revokes keys.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("consumer needs an action: create, get or delete")
			}
			return usagef("consumer: unknown action %q (want create, get or delete)", args[0])
		},
	}
	k, _ := kindOf("consumer")

	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a consumer without keys (add them with llmproxyctl key create)",
		Example: `  llmproxyctl consumer create team-search --model 'gpt-4o*' --requests-per-minute 600 \
      --tokens-per-minute 200000 --budget 250 --budget-period month --label team=search
  llmproxyctl key create team-search`,
		Args: cobra.ExactArgs(1),
	}
	var (
		models, forwards, labels []string
		rpm, maxParallel         uint32
		tpm, tpd                 uint64
		budget                   float64
		period                   string
	)
	f := create.Flags()
	f.StringArrayVar(&models, "model", nil, "model `GLOB` the consumer may ask for (repeatable; none: any model)")
	f.StringArrayVar(&forwards, "forward", nil, "forward `NAME` the consumer may use (repeatable; none: every forward)")
	f.Uint32Var(&rpm, "requests-per-minute", 0, "requests admitted per minute (`N`; 0: no limit)")
	f.Uint64Var(&tpm, "tokens-per-minute", 0, "tokens per minute (`N`; 0: no limit)")
	f.Uint64Var(&tpd, "tokens-per-day", 0, "tokens per day (`N`; 0: no limit)")
	f.Uint32Var(&maxParallel, "max-parallel", 0, "requests in flight at once (`N`; 0: no limit)")
	f.Float64Var(&budget, "budget", 0, "spend cap in `USD` per budget period, priced by the pricing list (0: none)")
	f.StringVar(&period, "budget-period", "", "`PERIOD` of the budget: day, week or month (default month)")
	f.StringArrayVar(&labels, "label", nil, "label `KEY=VALUE` copied to the consumer's traces and llmproxy_consumer_info (repeatable)")
	createOpts := addWriteFlags(c, create)
	create.RunE = func(cmd *cobra.Command, args []string) error {
		cs := &configv1.Consumer{Name: args[0], Models: models, Forwards: forwards}
		l := &configv1.ConsumerLimits{}
		if rpm > 0 {
			l.RequestsPerMinute = proto.Uint32(rpm)
		}
		if tpm > 0 {
			l.TokensPerMinute = proto.Uint64(tpm)
		}
		if tpd > 0 {
			l.TokensPerDay = proto.Uint64(tpd)
		}
		if maxParallel > 0 {
			l.MaxParallel = proto.Uint32(maxParallel)
		}
		switch {
		case budget > 0:
			l.Budget = &configv1.Budget{Usd: budget, Period: period}
		case period != "":
			return usagef("--budget-period needs --budget")
		}
		if proto.Size(l) > 0 {
			cs.Limits = l
		}
		for _, kv := range labels {
			key, val, ok := strings.Cut(kv, "=")
			if !ok || key == "" {
				return usagef("--label %q: want KEY=VALUE", kv)
			}
			if cs.Labels == nil {
				cs.Labels = map[string]string{}
			}
			cs.Labels[key] = val
		}
		resp, err := send(createOpts, adminv1.AdminServiceClient.CreateConsumer, &adminv1.CreateConsumerRequest{Consumer: cs})
		if err != nil {
			return err
		}
		return c.finishWrite(createOpts, resp, fmt.Sprintf("consumer %q created (revision %d)", args[0], resp.GetRevision()))
	}

	get := &cobra.Command{
		Use:               "get [NAME]",
		Short:             "Print every consumer, or one by NAME (key hashes redacted)",
		Example:           `  llmproxyctl consumer get team-search -o json`,
		Args:              cobra.RangeArgs(0, 1),
		ValidArgsFunction: c.completeConsumer(1),
	}
	out := addOutputFlag(get, "yaml", "json")
	get.RunE = func(cmd *cobra.Command, args []string) error {
		return c.printKind(k, args, out.value)
	}

	del := &cobra.Command{
		Use:               "delete NAME",
		Short:             "Delete a consumer and every key it has",
		Example:           `  llmproxyctl consumer delete team-search -m "team disbanded" --wait`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: c.completeConsumer(1),
	}
	delOpts := addWriteFlags(c, del)
	del.RunE = func(cmd *cobra.Command, args []string) error {
		resp, err := k.del(delOpts, args[0])
		if err != nil {
			return err
		}
		return c.finishWrite(delOpts, resp, fmt.Sprintf("consumer %q deleted (revision %d)", args[0], resp.GetRevision()))
	}
	cmd.AddCommand(create, get, del)
	return cmd
}

// completeConsumer completes the first n arguments with consumer names from the control
// plane.
func (c *cli) completeConsumer(n int) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) >= n {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		k, _ := kindOf("consumer")
		return c.completeKindAndName(0)(nil, []string{k.words[0]}, toComplete)
	}
}

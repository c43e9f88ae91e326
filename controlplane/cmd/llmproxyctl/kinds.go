package main

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// resourceKind is one named resource list of the config, as get and delete name it.
type resourceKind struct {
	name  string   // in messages: "upstream group"
	words []string // accepted on the command line; the first is shown by get, the second by delete
	// get returns the named resource, or every one when name is "", inside a Config.
	get func(ctx context.Context, client adminv1.AdminServiceClient, name string) (*configv1.Config, error)
	// del deletes the named resource, with the write flags of w.
	del func(w *writeOptions, name string) (*adminv1.DeleteResponse, error)
	// names lists the resources' names in cfg.
	names func(cfg *configv1.Config) []string
}

var resourceKinds = []resourceKind{
	{
		name:  "upstream",
		words: []string{"upstreams", "upstream"},
		get: func(ctx context.Context, client adminv1.AdminServiceClient, name string) (*configv1.Config, error) {
			if name != "" {
				u, err := client.GetUpstream(ctx, &adminv1.GetUpstreamRequest{Name: name})
				return &configv1.Config{Upstreams: []*configv1.Upstream{u}}, err
			}
			resp, err := client.ListUpstreams(ctx, &adminv1.ListUpstreamsRequest{})
			return &configv1.Config{Upstreams: resp.GetUpstreams()}, err
		},
		del: func(w *writeOptions, name string) (*adminv1.DeleteResponse, error) {
			return send(w, adminv1.AdminServiceClient.DeleteUpstream, &adminv1.DeleteUpstreamRequest{Name: name})
		},
		names: func(cfg *configv1.Config) []string { return namesOf(cfg.GetUpstreams()) },
	},
	{
		name:  "upstream group",
		words: []string{"groups", "group", "upstream-groups", "upstream-group", "upstream_groups", "upstream_group"},
		get: func(ctx context.Context, client adminv1.AdminServiceClient, name string) (*configv1.Config, error) {
			if name != "" {
				g, err := client.GetUpstreamGroup(ctx, &adminv1.GetUpstreamGroupRequest{Name: name})
				return &configv1.Config{UpstreamGroups: []*configv1.UpstreamGroup{g}}, err
			}
			resp, err := client.ListUpstreamGroups(ctx, &adminv1.ListUpstreamGroupsRequest{})
			return &configv1.Config{UpstreamGroups: resp.GetUpstreamGroups()}, err
		},
		del: func(w *writeOptions, name string) (*adminv1.DeleteResponse, error) {
			return send(w, adminv1.AdminServiceClient.DeleteUpstreamGroup, &adminv1.DeleteUpstreamGroupRequest{Name: name})
		},
		names: func(cfg *configv1.Config) []string { return namesOf(cfg.GetUpstreamGroups()) },
	},
	{
		name:  "forward",
		words: []string{"forwards", "forward"},
		get: func(ctx context.Context, client adminv1.AdminServiceClient, name string) (*configv1.Config, error) {
			if name != "" {
				f, err := client.GetForward(ctx, &adminv1.GetForwardRequest{Name: name})
				return &configv1.Config{HttpServer: &configv1.HttpServer{Forwards: []*configv1.Forward{f}}}, err
			}
			resp, err := client.ListForwards(ctx, &adminv1.ListForwardsRequest{})
			return &configv1.Config{HttpServer: &configv1.HttpServer{Forwards: resp.GetForwards()}}, err
		},
		del: func(w *writeOptions, name string) (*adminv1.DeleteResponse, error) {
			return send(w, adminv1.AdminServiceClient.DeleteForward, &adminv1.DeleteForwardRequest{Name: name})
		},
		names: func(cfg *configv1.Config) []string { return namesOf(cfg.GetHttpServer().GetForwards()) },
	},
	{
		name:  "consumer",
		words: []string{"consumers", "consumer"},
		get: func(ctx context.Context, client adminv1.AdminServiceClient, name string) (*configv1.Config, error) {
			if name != "" {
				cs, err := client.GetConsumer(ctx, &adminv1.GetConsumerRequest{Name: name})
				return &configv1.Config{Consumers: []*configv1.Consumer{cs}}, err
			}
			resp, err := client.ListConsumers(ctx, &adminv1.ListConsumersRequest{})
			return &configv1.Config{Consumers: resp.GetConsumers()}, err
		},
		del: func(w *writeOptions, name string) (*adminv1.DeleteResponse, error) {
			return send(w, adminv1.AdminServiceClient.DeleteConsumer, &adminv1.DeleteConsumerRequest{Name: name})
		},
		names: func(cfg *configv1.Config) []string { return namesOf(cfg.GetConsumers()) },
	},
}

// kindChoices spells the words at index i of every kind for a message: "a, b or c".
func kindChoices(i int) string {
	w := kindWords(i)
	return strings.Join(w[:len(w)-1], ", ") + " or " + w[len(w)-1]
}

// kindOf returns the kind a command-line word names.
func kindOf(word string) (resourceKind, bool) {
	for _, k := range resourceKinds {
		if slices.Contains(k.words, word) {
			return k, true
		}
	}
	return resourceKind{}, false
}

// kindWords lists, per kind, the word at index i of its words (0: plural, 1: singular).
func kindWords(i int) []string {
	var out []string
	for _, k := range resourceKinds {
		out = append(out, k.words[i])
	}
	return out
}

func namesOf[T interface{ GetName() string }](items []T) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, it.GetName())
	}
	return out
}

// completeKindAndName completes a KIND NAME pair of arguments: the kind words (index
// wordIndex of each kind's words), then the names of that kind read from the control plane.
func (c *cli) completeKindAndName(wordIndex int) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		switch len(args) {
		case 0:
			return kindWords(wordIndex), cobra.ShellCompDirectiveNoFileComp
		case 1:
			k, ok := kindOf(args[0])
			if !ok {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return c.completeFromServer(func(ctx context.Context, client adminv1.AdminServiceClient) ([]string, error) {
				cfg, err := k.get(ctx, client, "")
				return k.names(cfg), err
			}, toComplete)
		default:
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
	}
}

// completeKindAndNameOf completes the first argument with the names of the kind that word
// names (a command whose kind is fixed, such as cache purge GROUP).
func (c *cli) completeKindAndNameOf(word string) cobra.CompletionFunc {
	names := c.completeKindAndName(0)
	return func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) != 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return names(cmd, []string{word}, toComplete)
	}
}

// completionTimeout bounds the calls made to complete a word: a shell must not hang.
const completionTimeout = 3 * time.Second

// completeFromServer offers what list returns that starts with prefix; nothing when the
// control plane cannot be reached.
func (c *cli) completeFromServer(list func(context.Context, adminv1.AdminServiceClient) ([]string, error), prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	client, ctx, done, err := c.connect()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	defer done()
	ctx, cancel := context.WithTimeout(ctx, completionTimeout)
	defer cancel()
	names, err := list(ctx, client)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

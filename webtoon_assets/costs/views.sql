-- Views over the ledger (generations) and the bible (series_info, episodes). Spend that belongs to
-- no episode (the model trial: episode '') counts in asset_spend and model_spend, not per episode.
-- Statuses: generated, cached, refused, failed, unknown (outcome lost: held at its quote),
-- reconciled (billed_usd corrects the unknown row named in `settles`).
-- Money columns mean one thing everywhere (README, "What the cost numbers mean"):
--   spent_usd   billed: real money (0 offline, on hits, refusals; the quote while unknown)
--   quote_usd   the list price of what was made (status generated)
--   saved_usd   the list price of what the cache supplied (status cached)
--   counted_usd what counts in budgets, amortisation and projections: spent on a paid provider;
--               offline, the quote (so an offline season is an exact quote)
--   list_usd    (generations only) the attempt's request at list price, whatever its status
-- Spend is grouped per provider so an offline quote and a real run of the same season sit side by side.

CREATE VIEW episode_spend AS
SELECT series, provider, episode,
       sum(spent_usd) AS spent_usd,
       sum(quote_usd) AS quote_usd,
       sum(saved_usd) AS saved_usd,
       sum(counted_usd) AS counted_usd,
       count(*) FILTER (WHERE status = 'generated') AS generations,
       count(*) FILTER (WHERE status = 'cached') AS cache_hits,
       count(*) FILTER (WHERE status = 'refused') AS refused,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'unknown') AS unknown,
       coalesce(sum(megapixels) FILTER (WHERE status = 'generated'), 0) AS megapixels
FROM generations WHERE episode <> '' GROUP BY series, provider, episode;

-- Paid calls whose outcome was lost and is not yet settled by `webtoon reconcile`: each is
-- counted at its quote (spent_usd) in every sum until a `reconciled` row corrects it.
CREATE VIEW unknown_outcomes AS
SELECT id, time, run_id, series, episode, asset, item, provider, endpoint, request_key, provider_request_id,
       spent_usd AS held_usd, error
FROM generations
WHERE status = 'unknown'
  AND id NOT IN (SELECT settles FROM generations WHERE status = 'reconciled' AND settles IS NOT NULL)
ORDER BY time;

CREATE VIEW asset_spend AS
SELECT series, provider, asset,
       sum(spent_usd) AS spent_usd, sum(quote_usd) AS quote_usd, sum(saved_usd) AS saved_usd,
       sum(counted_usd) AS counted_usd,
       count(*) FILTER (WHERE status = 'generated') AS generations,
       count(*) FILTER (WHERE status = 'cached') AS cache_hits,
       coalesce(sum(megapixels) FILTER (WHERE status = 'generated'), 0) AS megapixels
FROM generations GROUP BY series, provider, asset;

CREATE VIEW model_spend AS
SELECT provider, endpoint,
       sum(spent_usd) AS spent_usd, sum(quote_usd) AS quote_usd, sum(saved_usd) AS saved_usd,
       sum(counted_usd) AS counted_usd,
       count(*) FILTER (WHERE status = 'generated') AS generations,
       count(*) FILTER (WHERE status = 'cached') AS cache_hits,
       coalesce(sum(images) FILTER (WHERE status = 'generated'), 0) AS images,
       coalesce(sum(megapixels) FILTER (WHERE status = 'generated'), 0) AS megapixels,
       CAST(sum(counted_usd) / nullif(sum(images) FILTER (WHERE status = 'generated'), 0) AS DECIMAL(18,6)) AS usd_per_image
FROM generations GROUP BY provider, endpoint;

-- Amortization. A one-time artifact (style, character, background) generated once costs C and is
-- used by U of the N episodes produced so far (series planned to P episodes). Each user bears
-- C / (U * max(1, P / N)): spread over the episodes that use it and over the planned season, so
-- over a fully produced season (N = P) the amortised total equals the as-paid total.
CREATE VIEW amortization AS
WITH episode_rows AS (
    SELECT * FROM generations WHERE episode <> ''
), artifacts AS (  -- an artifact made more than once costs what it cost the first time (whatever the rows' order)
    SELECT series, provider, request_key, first(counted_usd ORDER BY time, id) AS counted_usd
    FROM episode_rows WHERE reusable AND status = 'generated' GROUP BY ALL
), uses AS (
    SELECT DISTINCT series, provider, request_key, episode
    FROM episode_rows WHERE reusable AND status IN ('generated', 'cached')
), users AS (
    SELECT series, provider, request_key, count(*) AS n_users FROM uses GROUP BY ALL
), produced AS (
    SELECT series, provider, count(DISTINCT episode) AS n_produced
    FROM episode_rows WHERE status IN ('generated', 'cached') GROUP BY ALL
), shares AS (
    SELECT u.series, u.provider, u.episode,
           -- each share rounded to a DECIMAL first: a sum of DOUBLEs in parallel would depend on the order
           sum(CAST(a.counted_usd / (us.n_users * greatest(1.0, s.planned_episodes / p.n_produced)) AS DECIMAL(38,12)))
             AS shared_usd
    FROM uses u
    JOIN artifacts a USING (series, provider, request_key)
    JOIN users us USING (series, provider, request_key)
    JOIN produced p USING (series, provider)
    JOIN series_info s USING (series)
    GROUP BY ALL
), paid AS (
    SELECT series, provider, episode,
           sum(counted_usd) AS as_paid_usd,
           coalesce(sum(counted_usd) FILTER (WHERE reusable AND status = 'generated'), 0) AS one_time_made_usd,
           coalesce(sum(counted_usd) FILTER (WHERE NOT (reusable AND status = 'generated')), 0) AS episode_usd
    FROM episode_rows GROUP BY ALL
    HAVING count(*) FILTER (WHERE status IN ('generated', 'cached')) > 0
)
SELECT p.series, p.provider, p.episode, e.panels,
       p.as_paid_usd,
       p.one_time_made_usd,
       p.episode_usd,
       CAST(coalesce(sh.shared_usd, 0) AS DECIMAL(18,8)) AS shared_usd,
       CAST(p.episode_usd + coalesce(sh.shared_usd, 0) AS DECIMAL(18,8)) AS amortised_usd,
       CAST(p.as_paid_usd / nullif(e.panels, 0) AS DECIMAL(18,6)) AS as_paid_per_panel_usd,
       CAST((p.episode_usd + coalesce(sh.shared_usd, 0)) / nullif(e.panels, 0) AS DECIMAL(18,6)) AS amortised_per_panel_usd,
       s.target_per_panel_usd,
       (p.episode_usd + coalesce(sh.shared_usd, 0)) / nullif(e.panels, 0) <= s.target_per_panel_usd AS meets_target
FROM paid p
LEFT JOIN shares sh USING (series, provider, episode)
LEFT JOIN episodes e USING (series, episode)
JOIN series_info s USING (series)
ORDER BY p.series, p.provider, p.episode;

-- Projection: one-time costs so far plus N times the average per-episode cost (the study's
-- "10-episode total"), for N = 1..planned and 10.
CREATE VIEW projection AS
WITH per AS (
    SELECT series, provider, count(*) AS produced,
           avg(episode_usd) AS per_episode_usd, avg(panels) AS panels_per_episode,
           sum(one_time_made_usd) AS one_time_usd
    FROM amortization GROUP BY ALL
), ns AS (
    SELECT series, unnest(list_distinct(list_concat(range(1, planned_episodes + 1), [10]))) AS episodes
    FROM series_info
)
SELECT per.series, per.provider, ns.episodes, per.produced,
       CAST(per.one_time_usd AS DECIMAL(18,6)) AS one_time_usd,
       CAST(per.per_episode_usd AS DECIMAL(18,6)) AS per_episode_usd,
       CAST(per.one_time_usd + ns.episodes * per.per_episode_usd AS DECIMAL(18,6)) AS total_usd,
       CAST((per.one_time_usd + ns.episodes * per.per_episode_usd) / (ns.episodes * per.panels_per_episode)
            AS DECIMAL(18,6)) AS per_panel_usd,
       s.target_per_panel_usd,
       (per.one_time_usd + ns.episodes * per.per_episode_usd) / (ns.episodes * per.panels_per_episode)
           <= s.target_per_panel_usd AS meets_target
FROM per JOIN ns USING (series) JOIN series_info s USING (series)
ORDER BY per.series, per.provider, ns.episodes;

-- What the season's actual usage would cost on every image model in the price book, ranked by the
-- 10-episode total (one-time artifacts once, plus 10 times the per-episode rest). `rank` (1, 2, 3, ...)
-- is only for models that take every reference image the panels send; a model that would drop
-- references is cheaper but not comparable: its `rank` is NULL. `rank_all` ranks every model.
CREATE VIEW _whatif_ranked AS
WITH w AS (
    SELECT w.*, s.target_per_panel_usd,
           CAST(w.one_time_usd + 10 * (w.season_usd - w.one_time_usd) / nullif(w.episodes, 0) AS DECIMAL(18,6))
               AS ten_episode_usd
    FROM _whatif_raw w JOIN series_info s USING (series)
)
SELECT series, provider AS usage_from,
       CASE WHEN references_dropped = 0 THEN
           row_number() OVER (PARTITION BY series, provider, packing, references_dropped = 0
                              ORDER BY ten_episode_usd, season_usd, model, platform) END AS rank,
       row_number() OVER (PARTITION BY series, provider, packing ORDER BY ten_episode_usd, season_usd, model, platform)
           AS rank_all,
       platform, model, episodes, panels, season_usd,
       CAST(season_usd / nullif(panels, 0) AS DECIMAL(18,6)) AS per_panel_usd,
       ten_episode_usd,
       season_usd / nullif(panels, 0) <= target_per_panel_usd AS meets_target,
       max_references, references_dropped, endpoints, packing
FROM w;

-- The season's usage re-priced on every image model, as made ...
CREATE VIEW platform_whatif AS
SELECT * EXCLUDE (packing) FROM _whatif_ranked WHERE packing = 'none'
ORDER BY series, usage_from, rank NULLS LAST, rank_all;

-- ... and with every panel's references packed into one image (models.panels.pack_references: board).
CREATE VIEW platform_whatif_packed AS
SELECT * EXCLUDE (packing) FROM _whatif_ranked WHERE packing = 'board'
ORDER BY series, usage_from, rank NULLS LAST, rank_all;

-- The model trial: one row per candidate tried, and the decision tree's recommendation.
-- retake_rate: the share of its variations under the consistency gate's threshold; cost_per_accepted_panel_usd:
-- cost_per_panel_usd x takes_per_accepted_panel (retakes paid in, takes independent, up to max_retakes).
-- lora: the candidate trained a LoRA (models.loras.endpoint); its cost_per_panel_usd includes
-- lora_training_per_panel_usd, every character's training amortised over the planned season.
CREATE VIEW model_trials AS
SELECT series, model, platform, endpoint, cost_per_panel_usd, consistency, verdict, retake_rate,
       takes_per_accepted_panel, cost_per_accepted_panel_usd, cost_per_panel_lineup_usd, cost_per_panel_board_usd,
       packing, consistency_packed, coalesce(lora, false) AS lora, lora_training_per_panel_usd, scorer, variations,
       character, trial_spent_usd, trial_quote_usd, provider
FROM _trials ORDER BY series, cost_per_panel_usd;

-- What `webtoon reconcile` found, one row per run and source (the table `reconciliation` has each
-- difference: fal_units per fal result, fal_usage per endpoint and hour, bfl_cost per BFL response;
-- difference_usd = platform_usd - ledger_usd; drift when beyond the run's tolerance_usd).
CREATE VIEW reconciliation_runs AS
SELECT run_id, min(checked_at) AS checked_at, source,
       count(*) AS differences,
       count(*) FILTER (WHERE drift) AS drift,
       sum(difference_usd) AS difference_usd,
       coalesce(sum(difference_usd) FILTER (WHERE drift), 0) AS drift_usd
FROM reconciliation GROUP BY run_id, source
ORDER BY checked_at, source;

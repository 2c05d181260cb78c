-- The project's own tables as released at f068c87 (before the ledger), generated from that
-- release's SQLAlchemy metadata and frozen here: a migration never changes after release.

CREATE TABLE baselines (
	dataset_name TEXT NOT NULL, 
	dataset_version INTEGER NOT NULL, 
	horizon INTEGER NOT NULL, 
	model TEXT NOT NULL, 
	dataset_sha256 TEXT NOT NULL, 
	n_train INTEGER NOT NULL, 
	n_val INTEGER NOT NULL, 
	n_test INTEGER NOT NULL, 
	val_auc FLOAT NOT NULL, 
	val_pr_auc FLOAT NOT NULL, 
	val_loss FLOAT NOT NULL, 
	val_brier FLOAT NOT NULL, 
	val_accuracy FLOAT NOT NULL, 
	val_precision FLOAT NOT NULL, 
	val_recall FLOAT NOT NULL, 
	val_positive_rate FLOAT NOT NULL, 
	pred_mean FLOAT NOT NULL, 
	pred_std FLOAT NOT NULL, 
	pred_min FLOAT NOT NULL, 
	pred_max FLOAT NOT NULL, 
	test_auc FLOAT NOT NULL, 
	test_loss FLOAT NOT NULL, 
	metrics JSONB NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
	PRIMARY KEY (dataset_name, dataset_version, horizon, model)
);

CREATE TABLE datasets (
	id SERIAL NOT NULL, 
	name TEXT NOT NULL, 
	version INTEGER NOT NULL, 
	sha256 TEXT NOT NULL, 
	tier TEXT NOT NULL, 
	rows INTEGER NOT NULL, 
	start_date DATE NOT NULL, 
	end_date DATE NOT NULL, 
	input_columns JSONB NOT NULL, 
	sources JSONB NOT NULL, 
	meta JSONB NOT NULL, 
	content BYTEA NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (name, version)
);

CREATE TABLE device_leases (
	device TEXT NOT NULL, 
	slot INTEGER NOT NULL, 
	worker TEXT NOT NULL, 
	host TEXT NOT NULL, 
	device_index INTEGER NOT NULL, 
	device_name TEXT, 
	leased_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
	expires_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (device, slot)
);

CREATE TABLE series (
	id SERIAL NOT NULL, 
	symbol TEXT NOT NULL, 
	version INTEGER NOT NULL, 
	sha256 TEXT NOT NULL, 
	rows INTEGER NOT NULL, 
	start_date DATE NOT NULL, 
	end_date DATE NOT NULL, 
	source TEXT NOT NULL, 
	has_volume BOOLEAN NOT NULL, 
	repaired_rows INTEGER DEFAULT '0' NOT NULL, 
	content BYTEA NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (symbol, version)
);

CREATE TABLE study_specs (
	study_name TEXT NOT NULL, 
	study_id INTEGER NOT NULL, 
	budget TEXT NOT NULL, 
	budget_params BIGINT NOT NULL, 
	horizon INTEGER NOT NULL, 
	dataset_name TEXT NOT NULL, 
	dataset_version INTEGER NOT NULL, 
	dataset_sha256 TEXT NOT NULL, 
	objective TEXT NOT NULL, 
	direction TEXT NOT NULL, 
	target_trials INTEGER NOT NULL, 
	spec JSONB NOT NULL, 
	spec_sha256 TEXT NOT NULL, 
	code_version TEXT NOT NULL, 
	created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
	PRIMARY KEY (study_name), 
	UNIQUE (study_id)
);

CREATE TABLE trial_epochs (
	trial_id INTEGER NOT NULL, 
	epoch INTEGER NOT NULL, 
	train_loss FLOAT, 
	val_loss FLOAT, 
	val_auc FLOAT, 
	learning_rate FLOAT, 
	seconds FLOAT, 
	recorded_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
	PRIMARY KEY (trial_id, epoch)
);

CREATE TABLE trial_records (
	trial_id SERIAL NOT NULL, 
	study_name TEXT NOT NULL, 
	trial_number INTEGER NOT NULL, 
	state TEXT NOT NULL, 
	reason TEXT, 
	n_params BIGINT, 
	d_model INTEGER, 
	n_layers INTEGER, 
	n_heads INTEGER, 
	d_ff INTEGER, 
	learning_rate FLOAT, 
	weight_decay FLOAT, 
	dropout FLOAT, 
	warmup_frac FLOAT, 
	batch_size INTEGER, 
	micro_batch INTEGER, 
	grad_accum INTEGER, 
	epochs_run INTEGER, 
	best_epoch INTEGER, 
	val_auc FLOAT, 
	val_pr_auc FLOAT, 
	val_loss FLOAT, 
	val_brier FLOAT, 
	val_accuracy FLOAT, 
	val_precision FLOAT, 
	val_recall FLOAT, 
	pred_mean FLOAT, 
	pred_std FLOAT, 
	pred_min FLOAT, 
	pred_max FLOAT, 
	val_positive_rate FLOAT, 
	duration_s FLOAT, 
	samples_per_s FLOAT, 
	peak_memory_mb FLOAT, 
	worker TEXT, 
	host TEXT, 
	device TEXT, 
	code_version TEXT, 
	metrics JSONB DEFAULT '{}'::jsonb NOT NULL, 
	recorded_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
	PRIMARY KEY (trial_id), 
	FOREIGN KEY(study_name) REFERENCES study_specs (study_name)
);

CREATE INDEX ix_trial_records_study_name ON trial_records (study_name);


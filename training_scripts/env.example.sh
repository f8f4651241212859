# Copy to training_scripts/env.sh (git-ignored) and edit; sourced by the sbatch scripts before the run.
# Cluster options can also go on the sbatch command line (they override the scripts' #SBATCH defaults).
# export SBATCH_PARTITION=gpu          # sbatch reads SBATCH_* variables only at submission: set them in your shell
# export SBATCH_ACCOUNT=my-account
# Activate the environment that has midtrain installed:
# source /path/to/midtrain/.venv/bin/activate
# Where the shards live (configs refer to it as ${MIDTRAIN_DATA}):
# export MIDTRAIN_DATA=/scratch/$USER/midtrain-data

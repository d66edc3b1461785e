--[[
gkfs as a Slurm burst buffer: burst_buffer.lua for BurstBufferType=burst_buffer/lua.

Install it as burst_buffer.lua next to slurm.conf on the controller (with
burst_buffer.conf, see burst_buffer.conf.example), set the settings below, and set
burst_buffer=yes in the SPANK plugin's plugstack.conf line (or GKFS_BURST_BUFFER=yes for
the Prolog/Epilog scripts). Users then ask for gkfs in their batch script:

    #BB_LUA gkfs mountdir=/tmp/gkfs pool=gkfs capacity=100G
    #BB_LUA gkfs stage_in=/pfs/me/input:/tmp/gkfs/in
    #BB_LUA gkfs stage_out=/tmp/gkfs/out:/pfs/me/results

These hooks run on the controller (slurmctld / slurmscriptd, as SlurmUser), never on
the compute nodes, and the file system lives on the nodes: the daemons are started by
the job prolog and stopped by the job epilog, exactly as for `--gkfs` (see README.md).
What each hook does:

  slurm_bb_job_process  at submit: `gkfs-run burst-buffer check` validates the
                        directives; a bad one refuses the job with a message naming it
  slurm_bb_pools        the pool `capacity=` is accounted in (every 30 s)
  slurm_bb_real_size    nothing beyond what was asked for (gkfs takes no more)
  slurm_bb_setup        nothing: no resource exists before the nodes are known
  slurm_bb_data_in      nothing: the first node's prolog stages in (it can reach the
                        daemons; the controller cannot before the job starts)
  slurm_bb_paths        GKFS_MOUNTDIR in the batch script's environment (the plugin
                        sets LD_PRELOAD and the hosts file for every task)
  slurm_bb_pre_run      nothing (the node prolog runs after it)
  slurm_bb_post_run     nothing
  slurm_bb_data_out     waits for the first node's epilog to report the stage-out (it
                        writes the outcome to <workdir>/gkfs-<jobid>.stage-out); a
                        failure fails this hook, which Slurm shows as the job's reason
  slurm_bb_job_teardown nothing: the epilogs removed the data
  slurm_bb_get_status   `scontrol show bbstat`: the pool and these settings

Slurm reloads this file for every call: edits take effect at once.
--]]

-- Settings of the site.
local GKFS_RUN = "/usr/bin/gkfs-run"
-- The mount dir of directives that name none (the plugin's mountdir=).
local MOUNTDIR = "/tmp/gkfs"
-- The pool `capacity=` is accounted in, its size in granules of GRANULARITY bytes.
local POOL = "gkfs"
local GRANULARITY = 1024 * 1024 * 1024
local POOL_GRANULES = 10240
-- Longest wait for the first node's stage-out (keep it at or below StageOutTimeout).
local STAGE_OUT_TIMEOUT = 86400

local function quote(s)
	return "'" .. string.gsub(tostring(s), "'", "'\\''") .. "'"
end

-- Runs a gkfs-run burst-buffer command; returns its exit status and its output.
-- (Slurm links Lua 5.1: popen's close does not give the status, so the shell echoes it.)
local function gkfs_run(args)
	local p = io.popen(GKFS_RUN .. " burst-buffer " .. args .. " 2>&1; echo \"gkfs-rc=$?\"")
	if p == nil then
		return 1, "cannot run " .. GKFS_RUN
	end
	local out = p:read("*a")
	p:close()
	local rc = tonumber(string.match(out, "gkfs%-rc=(%d+)%s*$")) or 1
	out = string.gsub(out, "gkfs%-rc=%d+%s*$", "")
	out = string.gsub(out, "^gkfs%-run: error: ", "")
	out = string.gsub(out, "%s+$", "")
	return rc, out
end

function slurm_bb_job_process(job_script)
	local rc, out = gkfs_run("check --mountdir " .. quote(MOUNTDIR) .. " " .. quote(job_script))
	if rc ~= 0 then
		return slurm.ERROR, "gkfs: " .. out
	end
	return slurm.SUCCESS
end

function slurm_bb_pools()
	return slurm.SUCCESS, string.format(
		'{"pools":[{"id":"%s","granularity":%d,"quantity":%d}]}',
		POOL, GRANULARITY, POOL_GRANULES)
end

function slurm_bb_real_size(job_id)
	return slurm.SUCCESS, "0"
end

function slurm_bb_setup(job_id, uid, gid, pool, bb_size, job_script)
	return slurm.SUCCESS
end

function slurm_bb_data_in(job_id, job_script)
	return slurm.SUCCESS
end

function slurm_bb_paths(job_id, job_script, path_file)
	local rc, out = gkfs_run("check --mountdir " .. quote(MOUNTDIR) .. " " .. quote(job_script))
	local mountdir = string.match(out, "mountdir=(%S+)")
	if rc ~= 0 or mountdir == nil then
		return slurm.SUCCESS
	end
	local f = io.open(path_file, "a")
	if f == nil then
		return slurm.ERROR, "gkfs: cannot write " .. path_file
	end
	f:write("GKFS_MOUNTDIR=" .. mountdir .. "\n")
	f:close()
	return slurm.SUCCESS
end

function slurm_bb_pre_run(job_id, job_script)
	return slurm.SUCCESS
end

function slurm_bb_post_run(job_id, job_script)
	return slurm.SUCCESS
end

function slurm_bb_data_out(job_id, job_script)
	local rc, out = gkfs_run(string.format("wait-stage-out %s --timeout %d --mountdir %s",
		quote(job_id), STAGE_OUT_TIMEOUT, quote(MOUNTDIR)))
	if rc ~= 0 then
		slurm.log_info("gkfs: job %s: %s", job_id, out)
		return slurm.ERROR, out
	end
	return slurm.SUCCESS
end

function slurm_bb_job_teardown(job_id, job_script, hurry)
	return slurm.SUCCESS
end

function slurm_bb_get_status(...)
	return slurm.SUCCESS, string.format(
		"gkfs burst buffer (burst_buffer/lua): pool %s of %d GiB (granularity %d MiB), default mount dir %s, gkfs-run %s\n",
		POOL, POOL_GRANULES * GRANULARITY / 2^30, GRANULARITY / 2^20, MOUNTDIR, GKFS_RUN)
end

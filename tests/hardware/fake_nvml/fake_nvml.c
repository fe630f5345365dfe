/*
 * A tiny stand-in for libnvidia-ml.so.1, for tests: the real nvidia-ml-py bindings call it through ctypes exactly
 * as they call NVML. It implements only the entry points Joule Ledger uses, with the ABI of nvml.h.
 *
 * Its state is a text file named by the environment variable JOULELEDGER_FAKE_NVML, read again on every call so
 * a test can change it between reads. One directive per line; "gpu" starts a device and the directives after it
 * apply to that device; every "*_rc" sets the NVML return code of the matching call (0 = success):
 *
 *   init_rc N          nvmlInit                      generation N   bump it to simulate a driver reload
 *   reload_rc N        code of device calls after a reload (default 1, NVML_ERROR_UNINITIALIZED)
 *   count_rc N         nvmlDeviceGetCount
 *   gpu UUID NAME...   a physical GPU                handle_rc N    nvmlDeviceGetHandleByIndex
 *   rc N               every other call on this GPU (15 = GPU lost)
 *   energy MJ          energy_rc N                   power MW       power_rc N
 *   limit MW           limit_rc N                    proc PID       procs_rc N
 *   util PID TS_US SM  a process utilisation sample  util_rc N
 *   mig_mode N         mig_rc N                      mig UUID GPU_INSTANCE_SLICES COMPUTE_INSTANCE_SLICES
 *
 * Numbers are unsigned 64-bit; values wider than the C type of a call are truncated as the ABI would.
 *
 * Every entry point counts its calls (in this process, not in the state file): fake_nvml_calls(NAME) returns the
 * count of the entry point NAME ("nvmlDeviceGetPowerUsage_v2"... as exported, NULL for the total of all),
 * fake_nvml_reset_calls() sets them back to zero. Tests and the benchmark read them through ctypes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;

#define OK 0
#define ERR_UNINITIALIZED 1
#define ERR_INVALID_ARGUMENT 2
#define ERR_NOT_FOUND 6
#define ERR_INSUFFICIENT_SIZE 7
#define ERR_DRIVER_NOT_LOADED 9
#define ERR_UNKNOWN 999

#define MAX_GPUS 8
#define MAX_MIG 7
#define MAX_PROCS 32
#define MAX_SAMPLES 64
#define TEXT 96

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

typedef struct {
    unsigned int pid;
    unsigned long long timeStamp;
    unsigned int smUtil;
    unsigned int memUtil;
    unsigned int encUtil;
    unsigned int decUtil;
} nvmlProcessUtilizationSample_t;

typedef struct {
    unsigned int multiprocessorCount;
    unsigned int sharedCopyEngineCount;
    unsigned int sharedDecoderCount;
    unsigned int sharedEncoderCount;
    unsigned int sharedJpegCount;
    unsigned int sharedOfaCount;
    unsigned int gpuInstanceSliceCount;
    unsigned int computeInstanceSliceCount;
    unsigned long long memorySizeMB;
} nvmlDeviceAttributes_t;

/* A handle points at one of these: a physical GPU (mig < 0) or one of its MIG devices. */
typedef struct {
    int gpu;
    int mig;
} handle_t;

typedef handle_t *nvmlDevice_t;

struct mig {
    char uuid[TEXT];
    unsigned int gi_slices, ci_slices;
};

struct gpu {
    char uuid[TEXT], name[TEXT];
    int handle_rc, rc;
    int energy_rc, power_rc, limit_rc, procs_rc, util_rc, mig_rc;
    unsigned long long energy, power, limit;
    unsigned int nprocs, procs[MAX_PROCS];
    unsigned int nsamples;
    nvmlProcessUtilizationSample_t samples[MAX_SAMPLES];
    unsigned int mig_mode, nmig;
    struct mig migs[MAX_MIG];
};

static struct {
    int init_rc, count_rc, reload_rc;
    long long generation;
    unsigned int ngpus;
    struct gpu gpus[MAX_GPUS];
} st;

#define MAX_ENTRY_POINTS 64

static const char *call_names[MAX_ENTRY_POINTS];
static unsigned long long call_counts[MAX_ENTRY_POINTS];

/* Count one call of the entry point `name` (its __func__, a string with static storage). */
static void counted(const char *name) {
    int i;
    for (i = 0; i < MAX_ENTRY_POINTS && call_names[i] != NULL; i++)
        if (strcmp(call_names[i], name) == 0)
            break;
    if (i == MAX_ENTRY_POINTS)
        return;
    call_names[i] = name;
    call_counts[i]++;
}

unsigned long long fake_nvml_calls(const char *name) {
    unsigned long long total = 0;
    int i;
    for (i = 0; i < MAX_ENTRY_POINTS && call_names[i] != NULL; i++)
        if (name == NULL || strcmp(call_names[i], name) == 0)
            total += call_counts[i];
    return total;
}

void fake_nvml_reset_calls(void) {
    int i;
    for (i = 0; i < MAX_ENTRY_POINTS; i++)
        call_counts[i] = 0;
}

static handle_t gpu_handles[MAX_GPUS];
static handle_t mig_handles[MAX_GPUS][MAX_MIG];
static int initialized;
static long long init_generation;

static int load(void) {
    const char *path = getenv("JOULELEDGER_FAKE_NVML");
    FILE *file;
    char line[512];
    struct gpu *g = NULL;

    memset(&st, 0, sizeof st);
    st.reload_rc = ERR_UNINITIALIZED;
    if (path == NULL || (file = fopen(path, "r")) == NULL)
        return -1;
    while (fgets(line, sizeof line, file) != NULL) {
        char key[64] = "", a[TEXT] = "";
        unsigned long long n = 0, m = 0, k = 0;
        int rest = 0;

        line[strcspn(line, "\n")] = '\0';
        if (sscanf(line, "%63s %n", key, &rest) < 1 || key[0] == '#')
            continue;
        if (strcmp(key, "gpu") == 0 && st.ngpus < MAX_GPUS) {
            int after = -1;
            g = &st.gpus[st.ngpus++];
            sscanf(line + rest, "%95s%n", g->uuid, &after);
            if (after >= 0) {
                const char *name = line + rest + after;
                while (*name == ' ')
                    name++;
                snprintf(g->name, TEXT, "%s", *name ? name : "NVIDIA Fake GPU");
            }
            g->limit = 300000;
            continue;
        }
        sscanf(line + rest, "%llu %llu %llu", &n, &m, &k);
        if (strcmp(key, "init_rc") == 0) st.init_rc = (int)n;
        else if (strcmp(key, "count_rc") == 0) st.count_rc = (int)n;
        else if (strcmp(key, "reload_rc") == 0) st.reload_rc = (int)n;
        else if (strcmp(key, "generation") == 0) st.generation = (long long)n;
        else if (g == NULL) continue;
        else if (strcmp(key, "handle_rc") == 0) g->handle_rc = (int)n;
        else if (strcmp(key, "rc") == 0) g->rc = (int)n;
        else if (strcmp(key, "energy") == 0) g->energy = n;
        else if (strcmp(key, "energy_rc") == 0) g->energy_rc = (int)n;
        else if (strcmp(key, "power") == 0) g->power = n;
        else if (strcmp(key, "power_rc") == 0) g->power_rc = (int)n;
        else if (strcmp(key, "limit") == 0) g->limit = n;
        else if (strcmp(key, "limit_rc") == 0) g->limit_rc = (int)n;
        else if (strcmp(key, "procs_rc") == 0) g->procs_rc = (int)n;
        else if (strcmp(key, "util_rc") == 0) g->util_rc = (int)n;
        else if (strcmp(key, "mig_rc") == 0) g->mig_rc = (int)n;
        else if (strcmp(key, "mig_mode") == 0) g->mig_mode = (unsigned int)n;
        else if (strcmp(key, "proc") == 0 && g->nprocs < MAX_PROCS) g->procs[g->nprocs++] = (unsigned int)n;
        else if (strcmp(key, "util") == 0 && g->nsamples < MAX_SAMPLES) {
            nvmlProcessUtilizationSample_t *s = &g->samples[g->nsamples++];
            s->pid = (unsigned int)n;
            s->timeStamp = m;
            s->smUtil = (unsigned int)k;
        } else if (strcmp(key, "mig") == 0 && g->nmig < MAX_MIG) {
            struct mig *mi = &g->migs[g->nmig++];
            unsigned int gi = 0, ci = 0;
            sscanf(line + rest, "%95s %u %u", a, &gi, &ci);
            snprintf(mi->uuid, TEXT, "%s", a);
            mi->gi_slices = gi;
            mi->ci_slices = ci;
        }
    }
    fclose(file);
    return 0;
}

/* Load the state and check that a device call may go ahead; on success *g is the handle's GPU. */
static nvmlReturn_t enter(nvmlDevice_t device, struct gpu **g) {
    if (load() != 0)
        return ERR_UNKNOWN;
    if (!initialized)
        return ERR_UNINITIALIZED;
    if (st.generation != init_generation)
        return st.reload_rc;
    if (device == NULL || device->gpu < 0 || (unsigned int)device->gpu >= st.ngpus)
        return ERR_INVALID_ARGUMENT;
    *g = &st.gpus[device->gpu];
    if (device->mig >= 0 && (unsigned int)device->mig >= (*g)->nmig)
        return ERR_INVALID_ARGUMENT;
    return (*g)->rc;
}

static nvmlReturn_t copy_text(const char *text, char *out, unsigned int length) {
    if (out == NULL || strlen(text) + 1 > length)
        return ERR_INVALID_ARGUMENT;
    strcpy(out, text);
    return OK;
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    counted(__func__);
    (void)flags;
    if (load() != 0)
        return ERR_DRIVER_NOT_LOADED;
    if (st.init_rc != OK)
        return st.init_rc;
    initialized = 1;
    init_generation = st.generation;
    return OK;
}

nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void) {
    counted(__func__);
    if (!initialized)
        return ERR_UNINITIALIZED;
    initialized = 0;
    return OK;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    counted(__func__);
    switch (result) {
    case OK: return "Success";
    case ERR_UNINITIALIZED: return "Uninitialized";
    case ERR_INVALID_ARGUMENT: return "Invalid Argument";
    case 3: return "Not Supported";
    case ERR_NOT_FOUND: return "Not Found";
    case ERR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case ERR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case 15: return "GPU is lost";
    case 16: return "GPU requires restart";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    counted(__func__);
    if (load() != 0)
        return ERR_UNKNOWN;
    if (!initialized)
        return ERR_UNINITIALIZED;
    if (st.generation != init_generation)
        return st.reload_rc;
    if (st.count_rc != OK)
        return st.count_rc;
    *count = st.ngpus;
    return OK;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    counted(__func__);
    if (load() != 0)
        return ERR_UNKNOWN;
    if (!initialized)
        return ERR_UNINITIALIZED;
    if (st.generation != init_generation)
        return st.reload_rc;
    if (index >= st.ngpus || index >= MAX_GPUS)
        return ERR_INVALID_ARGUMENT;
    if (st.gpus[index].handle_rc != OK)
        return st.gpus[index].handle_rc;
    gpu_handles[index].gpu = (int)index;
    gpu_handles[index].mig = -1;
    *device = &gpu_handles[index];
    return OK;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    counted(__func__);
    struct gpu *g = NULL;
    nvmlReturn_t rc = enter(device, &g);
    if (rc != OK)
        return rc;
    return copy_text(device->mig >= 0 ? g->migs[device->mig].uuid : g->uuid, uuid, length);
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    counted(__func__);
    struct gpu *g = NULL;
    nvmlReturn_t rc = enter(device, &g);
    return rc != OK ? rc : copy_text(g->name, name, length);
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *energy) {
    counted(__func__);
    struct gpu *g = NULL;
    nvmlReturn_t rc = enter(device, &g);
    if (rc != OK || g->energy_rc != OK)
        return rc != OK ? rc : g->energy_rc;
    *energy = g->energy;
    return OK;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    counted(__func__);
    struct gpu *g = NULL;
    nvmlReturn_t rc = enter(device, &g);
    if (rc != OK || g->power_rc != OK)
        return rc != OK ? rc : g->power_rc;
    *power = (unsigned int)g->power;
    return OK;
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit) {
    counted(__func__);
    struct gpu *g = NULL;
    nvmlReturn_t rc = enter(device, &g);
    if (rc != OK || g->limit_rc != OK)
        return rc != OK ? rc : g->limit_rc;
    *limit = (unsigned int)g->limit;
    return OK;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *count,
                                                     nvmlProcessInfo_t *infos) {
    counted(__func__);
    struct gpu *g = NULL;
    nvmlReturn_t rc = enter(device, &g);
    unsigned int i;
    if (rc != OK || g->procs_rc != OK)
        return rc != OK ? rc : g->procs_rc;
    if (*count < g->nprocs || (infos == NULL && g->nprocs > 0)) {
        *count = g->nprocs;
        return ERR_INSUFFICIENT_SIZE;
    }
    for (i = 0; i < g->nprocs; i++) {
        memset(&infos[i], 0, sizeof infos[i]);
        infos[i].pid = g->procs[i];
        infos[i].usedGpuMemory = 1ULL << 30;
        infos[i].gpuInstanceId = 0xFFFFFFFFu;
        infos[i].computeInstanceId = 0xFFFFFFFFu;
    }
    *count = g->nprocs;
    return OK;
}

/* Like NVML: only the samples newer than lastSeen; NOT_FOUND when there are none. */
nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device, nvmlProcessUtilizationSample_t *samples,
                                             unsigned int *count, unsigned long long lastSeen) {
    counted(__func__);
    struct gpu *g = NULL;
    nvmlReturn_t rc = enter(device, &g);
    unsigned int i, newer = 0;
    if (rc != OK || g->util_rc != OK)
        return rc != OK ? rc : g->util_rc;
    for (i = 0; i < g->nsamples; i++)
        newer += g->samples[i].timeStamp > lastSeen;
    if (newer == 0)
        return ERR_NOT_FOUND;
    if (samples == NULL || *count < newer) {
        *count = newer;
        return ERR_INSUFFICIENT_SIZE;
    }
    newer = 0;
    for (i = 0; i < g->nsamples; i++)
        if (g->samples[i].timeStamp > lastSeen)
            samples[newer++] = g->samples[i];
    *count = newer;
    return OK;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *current, unsigned int *pending) {
    counted(__func__);
    struct gpu *g = NULL;
    nvmlReturn_t rc = enter(device, &g);
    if (rc != OK || g->mig_rc != OK)
        return rc != OK ? rc : g->mig_rc;
    *current = g->mig_mode;
    *pending = g->mig_mode;
    return OK;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count) {
    counted(__func__);
    struct gpu *g = NULL;
    nvmlReturn_t rc = enter(device, &g);
    if (rc != OK || g->mig_rc != OK)
        return rc != OK ? rc : g->mig_rc;
    *count = MAX_MIG;
    return OK;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index, nvmlDevice_t *mig) {
    counted(__func__);
    struct gpu *g = NULL;
    nvmlReturn_t rc = enter(device, &g);
    if (rc != OK)
        return rc;
    if (index >= MAX_MIG || device->mig >= 0)
        return ERR_INVALID_ARGUMENT;
    if (index >= g->nmig)
        return ERR_NOT_FOUND;
    mig_handles[device->gpu][index].gpu = device->gpu;
    mig_handles[device->gpu][index].mig = (int)index;
    *mig = &mig_handles[device->gpu][index];
    return OK;
}

nvmlReturn_t nvmlDeviceGetAttributes_v2(nvmlDevice_t device, nvmlDeviceAttributes_t *attributes) {
    counted(__func__);
    struct gpu *g = NULL;
    nvmlReturn_t rc = enter(device, &g);
    if (rc != OK)
        return rc;
    memset(attributes, 0, sizeof *attributes);
    if (device->mig >= 0) {
        attributes->gpuInstanceSliceCount = g->migs[device->mig].gi_slices;
        attributes->computeInstanceSliceCount = g->migs[device->mig].ci_slices;
        attributes->multiprocessorCount = 16 * g->migs[device->mig].ci_slices;
    } else {
        attributes->gpuInstanceSliceCount = 7;
        attributes->computeInstanceSliceCount = 7;
        attributes->multiprocessorCount = 132;
    }
    return OK;
}

/* Only for the benchmark's peers (CodeCarbon and Zeus set up their devices with these; Joule Ledger does not). */
typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    counted(__func__);
    struct gpu *g = NULL;
    nvmlReturn_t rc = enter(device, &g);
    if (rc != OK)
        return rc;
    memory->total = 80ULL << 30;
    memory->used = 1ULL << 30;
    memory->free = memory->total - memory->used;
    return OK;
}

nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, unsigned int *architecture) {
    counted(__func__);
    struct gpu *g = NULL;
    nvmlReturn_t rc = enter(device, &g);
    if (rc != OK)
        return rc;
    *architecture = 9; /* NVML_DEVICE_ARCH_HOPPER */
    return OK;
}

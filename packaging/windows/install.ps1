<#
.SYNOPSIS
  Install guestd as a Windows service (run as Administrator).

.DESCRIPTION
  Copies guestd.exe (and guestd-update.exe beside it, the download helper agentupdate runs)
  to "$env:ProgramFiles\guestd", puts the default configuration in
  "$env:ProgramData\guestd\guestd.toml" (an existing one is kept), registers the service
  "guestd" (automatic start, LocalSystem, restarted by the SCM when it dies) and starts it.
  The service runs "guestd.exe --service" and logs to "$env:ProgramData\guestd\guestd.log".
  Running it again upgrades the binary in place.

.EXAMPLE
  powershell -ExecutionPolicy Bypass -File install.ps1 -Binary .\guestd.exe -Config .\guestd.toml
#>
param(
    [string]$Binary = (Join-Path $PSScriptRoot 'guestd.exe'),
    [string]$Config = (Join-Path $PSScriptRoot 'guestd.toml'),
    [string]$Name = 'guestd'
)
$ErrorActionPreference = 'Stop'

if (-not (Test-Path -LiteralPath $Binary)) { throw "guestd.exe not found at $Binary" }
$installDir = Join-Path $env:ProgramFiles 'guestd'
$dataDir = Join-Path $env:ProgramData 'guestd'
$exe = Join-Path $installDir 'guestd.exe'

$existing = Get-Service -Name $Name -ErrorAction SilentlyContinue
if ($existing -and $existing.Status -ne 'Stopped') {
    Stop-Service -Name $Name -Force
    $existing.WaitForStatus('Stopped', (New-TimeSpan -Seconds 60))
}

New-Item -ItemType Directory -Force -Path $installDir, $dataDir | Out-Null
Copy-Item -LiteralPath $Binary -Destination $exe -Force
# agentupdate downloads through guestd-update.exe, found beside guestd.exe.
$helper = Join-Path (Split-Path -Parent $Binary) 'guestd-update.exe'
if (Test-Path -LiteralPath $helper) {
    Copy-Item -LiteralPath $helper -Destination (Join-Path $installDir 'guestd-update.exe') -Force
} else {
    Write-Warning "guestd-update.exe not found beside $Binary; agentupdate will fail until it is installed"
}
$target = Join-Path $dataDir 'guestd.toml'
if ((Test-Path -LiteralPath $Config) -and -not (Test-Path -LiteralPath $target)) {
    Copy-Item -LiteralPath $Config -Destination $target
}

# The configuration must load before the service is (re)registered.
& $exe --check-config | Out-Null
if ($LASTEXITCODE -ne 0) { throw "guestd --check-config failed; see the message above" }

$binPath = "`"$exe`" --service"
if ($existing) {
    & sc.exe config $Name binPath= $binPath start= auto | Out-Null
} else {
    New-Service -Name $Name -BinaryPathName $binPath -DisplayName 'guestd guest agent' `
        -Description 'Carries out the cloud host''s requests (password, network, files) over a host-only channel.' `
        -StartupType Automatic | Out-Null
}
# Restart after 5 s, 5 s, then 60 s; forget failures after a day.
& sc.exe failure $Name reset= 86400 actions= restart/5000/restart/5000/restart/60000 | Out-Null

Start-Service -Name $Name
Write-Host "guestd installed and started; log: $(Join-Path $dataDir 'guestd.log')"
